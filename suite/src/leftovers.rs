//! What a killed suite leaves behind, and how the next one removes it. Ctrl-C, SIGTERM and
//! panics are cleaned up in-process; SIGKILL cannot be caught, and the kernel's parent-death
//! signal reaches only the proxy's master process, so workers reparented to init (nginx,
//! Apache children) and the run's prefixes would stay. Every proxy process therefore carries
//! its owner in its environment (`PROXY_SUITE_OWNER=<pid>:<start time>`, inherited by workers)
//! and every prefix an `.owner` file; a suite process that starts later kills the processes and
//! removes the prefixes whose owner is gone. A prefix kept on purpose (for debugging) drops its
//! `.owner` file and is never removed.

use std::path::Path;

/// The environment variable every proxy process (and its workers) inherits.
pub const OWNER_ENV: &str = "PROXY_SUITE_OWNER";
/// The file in a prefix naming its owner.
pub const OWNER_FILE: &str = ".owner";

/// This process as an owner: pid and start time, so a reused pid is not taken for it.
pub fn owner_tag() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or_default())
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow its `)`.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the owner a tag names is still running.
pub(crate) fn alive(tag: &str) -> bool {
    let Some((pid, started)) = tag.trim().split_once(':') else { return false };
    let Ok(pid) = pid.parse::<u32>() else { return false };
    start_time(pid).is_some_and(|t| t.to_string() == started)
}

/// Whether `tag` has the form of an owner tag (`pid:start time`), not another tool's label.
pub(crate) fn is_owner_tag(tag: &str) -> bool {
    tag.split_once(':').is_some_and(|(p, t)| !p.is_empty() && !t.is_empty() && p.bytes().chain(t.bytes()).all(|b| b.is_ascii_digit()))
}

/// Marks a prefix as owned by this process.
pub fn claim(prefix: &Path) -> std::io::Result<()> {
    std::fs::write(prefix.join(OWNER_FILE), owner_tag())
}

/// Keeps a prefix for good: it no longer belongs to a run, so no later run removes it.
pub fn release(prefix: &Path) {
    let _ = std::fs::remove_file(prefix.join(OWNER_FILE));
}

/// What [`reap`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub processes: usize,
    pub prefixes: usize,
}

/// Ends a run's prefix: removed, or, when `keep` is asked (a failed setup) or the thread is
/// panicking, kept for debugging without its owner (no later run removes it) and said so.
pub fn close_prefix(prefix: tempfile::TempDir, keep: bool, proxy: &str) {
    if keep || std::thread::panicking() {
        release(prefix.path());
        let kept = prefix.keep();
        eprintln!("proxy-suite: kept prefix of {proxy} for debugging: {}", kept.display());
    }
}

/// Kills every process whose owner (from its environment) has died, and removes every prefix
/// under the temporary folder whose owner has died.
pub fn reap() -> Reaped {
    let mut reaped = Reaped::default();
    let needle = format!("{OWNER_ENV}=");
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.filter_map(|e| e.ok()) {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
            let owner = environ
                .split(|b| *b == 0)
                .filter_map(|v| std::str::from_utf8(v).ok())
                .find_map(|v| v.strip_prefix(needle.as_str()).map(str::to_string));
            if let Some(owner) = owner {
                if !alive(&owner) {
                    let pid = nix::unistd::Pid::from_raw(pid);
                    // A proxy leads its own process group (the runtime starts it so): its whole
                    // group goes, since workers that clear their environment (nginx keeps only
                    // TZ) carry no owner and would be left behind, reparented to init.
                    let leads_group = nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g == pid && g != nix::unistd::getpgrp());
                    let _ = if leads_group {
                        nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL)
                    } else {
                        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
                    };
                    reaped.processes += 1;
                }
            }
        }
    }
    let mut dead_prefixes = Vec::new();
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let is_ours = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("proxy-suite-"));
            if !is_ours {
                continue;
            }
            if let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) {
                if !alive(&owner) {
                    dead_prefixes.push(path);
                }
            }
        }
    }
    // A worker whose master died with the suite (the master's parent-death signal) keeps no
    // owner in its environment when the proxy clears it (nginx keeps only TZ), but it still
    // writes into its run's prefix: every process with a file open there goes first.
    reaped.processes += kill_holders(&dead_prefixes);
    for path in dead_prefixes {
        if std::fs::remove_dir_all(&path).is_ok() {
            reaped.prefixes += 1;
        }
    }
    reaped
}

/// Kills every process with a file descriptor or its working directory inside one of
/// `prefixes`; returns how many.
fn kill_holders(prefixes: &[std::path::PathBuf]) -> usize {
    if prefixes.is_empty() {
        return 0;
    }
    let inside = |target: &std::path::Path| prefixes.iter().any(|p| target.starts_with(p));
    let mut killed = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    for entry in entries.filter_map(|e| e.ok()) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if pid == std::process::id() as i32 {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd")).ok();
        let holds = cwd.as_deref().is_some_and(inside)
            || std::fs::read_dir(entry.path().join("fd"))
                .map(|fds| fds.filter_map(|f| f.ok()).filter_map(|f| std::fs::read_link(f.path()).ok()).any(|t| inside(&t)))
                .unwrap_or(false);
        if holds {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_or_reused_pid_is_not() {
        assert!(alive(&owner_tag()));
        let pid = std::process::id();
        assert!(!alive(&format!("{pid}:1")), "same pid, other start time: a reused pid");
        assert!(!alive("999999999:1"));
        assert!(!alive("garbage"));
    }

    #[test]
    fn a_prefix_of_a_dead_owner_is_removed_and_a_released_one_kept() {
        let dead = tempfile::Builder::new().prefix("proxy-suite-test-dead-").tempdir().unwrap().keep();
        std::fs::write(dead.join(OWNER_FILE), "999999999:1").unwrap();
        let kept = tempfile::Builder::new().prefix("proxy-suite-test-kept-").tempdir().unwrap().keep();
        claim(&kept).unwrap();
        std::fs::write(kept.join(OWNER_FILE), "999999999:1").unwrap();
        release(&kept);
        let mine = tempfile::Builder::new().prefix("proxy-suite-test-mine-").tempdir().unwrap();
        claim(mine.path()).unwrap();
        reap();
        assert!(!dead.exists(), "a dead owner's prefix is removed");
        assert!(kept.exists(), "a released prefix is kept");
        assert!(mine.path().exists(), "a live owner's prefix is kept");
        std::fs::remove_dir_all(kept).unwrap();
    }
}
