//! The user's language for `check` (`--lang en|zh|ko`, else from the locale): the failure sign
//! and the rule of the OpenChamber guide, quoted in the guide's own words in that language.
//! The quotations live in `suite/data/openchamber-guide-quotes.json` (per check id, with the
//! guide file each language is quoted from), so a clean clone has them; directives are never
//! translated (they stay in the proxy's syntax in the fix and cause lines).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// A language the OpenChamber guide is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    En,
    Zh,
    Ko,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::En, Lang::Zh, Lang::Ko];

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
            Lang::Ko => "ko",
        }
    }

    /// The language of the locale, as POSIX picks the messages' locale: the first set of
    /// LC_ALL, LC_MESSAGES, LANG; English when it is none of the guide's languages.
    pub fn from_env() -> Lang {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let locale = var("LC_ALL").or_else(|| var("LC_MESSAGES")).or_else(|| var("LANG"));
        locale.as_deref().map(Lang::from_locale).unwrap_or(Lang::En)
    }

    /// `zh_CN.UTF-8` → zh, `ko_KR` → ko, anything else (`C`, `POSIX`, `de_DE`) → en.
    pub fn from_locale(locale: &str) -> Lang {
        let language = locale.split(['_', '.', '@', '-']).next().unwrap_or("").to_ascii_lowercase();
        match language.as_str() {
            "zh" => Lang::Zh,
            "ko" => Lang::Ko,
            _ => Lang::En,
        }
    }
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the guide says about one check in one language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The failure sign: the guide's heading, then the listed cause where one fits.
    pub sign: Vec<String>,
    /// The guide's rule the check tests.
    pub rule: String,
}

#[derive(Deserialize)]
struct Quotes {
    sources: BTreeMap<Lang, String>,
    checks: BTreeMap<String, BTreeMap<Lang, Quote>>,
}

fn quotes() -> &'static Quotes {
    static QUOTES: OnceLock<Quotes> = OnceLock::new();
    QUOTES.get_or_init(|| serde_json::from_str(include_str!("../data/openchamber-guide-quotes.json")).expect("suite/data/openchamber-guide-quotes.json is valid (tested)"))
}

/// The guide's words for `check` in `lang`, when the check tests one of its rules.
pub fn quote(check: &str, lang: Lang) -> Option<&'static Quote> {
    quotes().checks.get(check)?.get(&lang)
}

/// The guide file the language is quoted from.
pub fn source(lang: Lang) -> &'static str {
    quotes().sources.get(&lang).map(String::as_str).unwrap_or("")
}

/// The check ids the guide has a rule for.
pub fn quoted_checks() -> impl Iterator<Item = &'static str> {
    quotes().checks.keys().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_locale_picks_the_language() {
        assert_eq!(Lang::from_locale("zh_CN.UTF-8"), Lang::Zh);
        assert_eq!(Lang::from_locale("ko_KR.UTF-8"), Lang::Ko);
        assert_eq!(Lang::from_locale("C.UTF-8"), Lang::En);
        assert_eq!(Lang::from_locale("de_DE"), Lang::En);
    }

    /// Every check that tests one of the OpenChamber guide's rules has the guide's words in all
    /// three languages; the ids are the catalogue's.
    #[test]
    fn every_guide_check_is_quoted_in_every_language() {
        let catalogue: Vec<&str> = crate::checks::catalogue().iter().map(|c| c.id).collect();
        let mapped: Vec<&str> = quoted_checks().collect();
        for id in ["ws.upgrade", "ws.terminal", "ws.idle", "sse.stream", "sse.headers", "sse.idle", "http.slow", "body.large", "body.streaming", "compress.single", "compress.sse", "headers.forwarded", "auth.origin"] {
            assert!(mapped.contains(&id), "{id} is not quoted");
        }
        for id in mapped {
            assert!(catalogue.contains(&id), "{id} is not a check");
            for lang in Lang::ALL {
                let q = quote(id, lang).unwrap_or_else(|| panic!("{id} has no {lang}"));
                assert!(!q.sign.is_empty() && q.sign.iter().all(|s| !s.trim().is_empty()) && !q.rule.trim().is_empty(), "{id} {lang}");
            }
        }
        for lang in Lang::ALL {
            assert!(source(lang).starts_with("shared/seeds/"), "{lang}");
        }
    }

    /// The quotations are the guide's own sentences: each is in its seed, ignoring white space
    /// (the extraction glued inline code to the words). The seeds are beside the checkout
    /// (`../shared/seeds`) on the project's machines; a clean clone skips this comparison.
    #[test]
    fn the_quotations_are_the_guides_own_words() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
        let candidates = [seeds, std::path::PathBuf::from("/work/shared")];
        let Some(shared) = candidates.iter().find(|p| p.join("seeds").is_dir()) else {
            eprintln!("no shared/seeds here: the quotations are not compared with the guides");
            return;
        };
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        for lang in Lang::ALL {
            let seed = std::fs::read_to_string(shared.join(source(lang).trim_start_matches("shared/"))).unwrap();
            let seed = squash(&seed);
            for id in quoted_checks() {
                let q = quote(id, lang).unwrap();
                for sentence in q.sign.iter().chain([&q.rule]) {
                    assert!(seed.contains(&squash(sentence)), "{id} {lang}: {sentence:?} is not in {}", source(lang));
                }
            }
        }
    }
}
