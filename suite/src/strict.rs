//! Fail closed: what a missing component (a pinned proxy, later Docker or Chromium) means.
//! On a user's machine it is a skip with the reason and the install hint; with
//! `PROXY_SUITE_STRICT=1` (which `.ci/run` sets, and `scripts/setup.sh` honours like
//! `--strict`) it is a failure naming the component, so a CI machine where an install broke
//! can never pass by skipping.

/// The environment switch.
pub const SWITCH: &str = "PROXY_SUITE_STRICT";

/// True when every component the tests need is required.
pub fn strict() -> bool {
    std::env::var(SWITCH).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// What the caller should do about a missing component: skip it (`Ok`, after printing
/// `SKIP <component>: <reason>`), or fail with the message (`Err`) in strict mode.
pub fn unavailable(component: &str, reason: &str) -> Result<(), String> {
    decide(strict(), component, reason)
}

fn decide(strict: bool, component: &str, reason: &str) -> Result<(), String> {
    if strict {
        Err(format!("{component} is required ({SWITCH}=1) but unavailable: {reason}"))
    } else {
        eprintln!("SKIP {component}: {reason}");
        Ok(())
    }
}

/// For test code: skips, or panics (failing the test) in strict mode.
pub fn skip_or_fail(component: &str, reason: &str) {
    if let Err(message) = unavailable(component, reason) {
        panic!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_mode_turns_a_skip_into_a_failure_naming_the_component() {
        assert!(decide(false, "traefik@3.7", "not found").is_ok());
        let err = decide(true, "traefik@3.7", "pip download failed").unwrap_err();
        assert!(err.contains("traefik@3.7") && err.contains("pip download failed"), "{err}");
    }
}
