//! nginx and NPM's Advanced text: the config read as nginx reads it (directives and blocks,
//! each with its line), the `location` that serves each path a check sends (nginx's order:
//! exact, `^~` prefix, regex in order, longest prefix), the directives in force there with
//! nginx's inheritance (a scalar from the nearest level that sets it; `proxy_set_header` only
//! from the nearest level that has any: all or nothing), and from those the line behind each
//! failed check and the smallest edit that fixes it.
//!
//! Why a tokenizer of our own: no maintained Rust crate parses nginx configs with line
//! numbers (the crates.io parsers are unmaintained or drop positions), and nginx's syntax is
//! small: words (bare or quoted), `;`, `{`, `}` and `#` comments.
//!
//! NPM: the Advanced text goes inside NPM's server block, after the lines of the "Websockets
//! Support" switch; unless it has its own `location /`, NPM adds one whose `proxy.conf` sets
//! its own `proxy_set_header` lines, so the text's server-level ones never reach it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use super::{paths, too_short, Cause, Correction, Edit, Situation, SETUP};
use crate::tls::Transport;

/// One directive, with its block when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    /// 1-based line of the directive's name.
    pub line: usize,
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    fn arg(&self, i: usize) -> &str {
        self.args.get(i).map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

/// The tokens of `text` with their lines.
fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            ';' | '{' | '}' => {
                chars.next();
                tokens.push((
                    match c {
                        ';' => Token::Semicolon,
                        '{' => Token::Open,
                        _ => Token::Close,
                    },
                    line,
                ));
            }
            '"' | '\'' => {
                let start = line;
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("line {start}: unterminated quoted string")),
                        Some('\\') => {
                            if let Some(n) = chars.next() {
                                word.push(n);
                            }
                        }
                        Some(q) if q == c => break,
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            word.push(ch);
                        }
                    }
                }
                tokens.push((Token::Word(word), start));
            }
            _ => {
                let mut word = String::new();
                while let Some(&ch) = chars.peek() {
                    // `${var}` keeps its braces inside a word.
                    if ch.is_whitespace() || ch == ';' || (ch == '{' && !word.ends_with('$')) || (ch == '}' && !word.contains("${")) {
                        break;
                    }
                    word.push(ch);
                    chars.next();
                }
                tokens.push((Token::Word(word), line));
            }
        }
    }
    Ok(tokens)
}

/// The directives of an nginx config (or of a block's body, such as NPM's Advanced text).
pub fn parse(text: &str) -> Result<Vec<Directive>, String> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    let directives = parse_block(&tokens, &mut pos)?;
    match tokens.get(pos) {
        None => Ok(directives),
        Some((_, line)) => Err(format!("line {line}: unexpected `}}`")),
    }
}

fn parse_block(tokens: &[(Token, usize)], pos: &mut usize) -> Result<Vec<Directive>, String> {
    let mut out = Vec::new();
    while let Some((token, line)) = tokens.get(*pos) {
        match token {
            Token::Close => return Ok(out),
            Token::Semicolon | Token::Open => return Err(format!("line {line}: a directive name is missing")),
            Token::Word(name) => {
                let mut d = Directive { name: name.clone(), args: Vec::new(), line: *line, block: None };
                *pos += 1;
                loop {
                    match tokens.get(*pos) {
                        Some((Token::Word(w), _)) => {
                            d.args.push(w.clone());
                            *pos += 1;
                        }
                        Some((Token::Semicolon, _)) => {
                            *pos += 1;
                            break;
                        }
                        Some((Token::Open, _)) => {
                            *pos += 1;
                            let body = parse_block(tokens, pos)?;
                            match tokens.get(*pos) {
                                Some((Token::Close, _)) => *pos += 1,
                                _ => return Err(format!("line {}: `{}` block is not closed", d.line, d.name)),
                            }
                            d.block = Some(body);
                            break;
                        }
                        Some((Token::Close, l)) => return Err(format!("line {l}: `;` missing before `}}`")),
                        None => return Err(format!("line {}: `{}` has no `;`", d.line, d.name)),
                    }
                }
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// A location's block and how it matches.
struct Location<'a> {
    /// None: NPM's own `location /` (not in the user's text).
    directive: Option<&'a Directive>,
    modifier: &'a str,
    pattern: &'a str,
}

impl Location<'_> {
    fn body(&self) -> &[Directive] {
        self.directive.and_then(|d| d.block.as_deref()).unwrap_or(&[])
    }
}

/// The locations of a server body, as nginx picks one for `path`.
fn serving<'a>(locations: &'a [Location<'a>], path: &str) -> Option<&'a Location<'a>> {
    if let Some(exact) = locations.iter().find(|l| l.modifier == "=" && l.pattern == path) {
        return Some(exact);
    }
    let prefix = locations.iter().filter(|l| (l.modifier.is_empty() || l.modifier == "^~") && path.starts_with(l.pattern)).max_by_key(|l| l.pattern.len());
    if prefix.is_some_and(|l| l.modifier == "^~") {
        return prefix;
    }
    let regex = locations.iter().find(|l| {
        let pattern = match l.modifier {
            "~" => l.pattern.to_string(),
            "~*" => format!("(?i){}", l.pattern),
            _ => return false,
        };
        Regex::new(&pattern).is_ok_and(|re| re.is_match(path))
    });
    regex.or(prefix)
}

/// The site as nginx (or NPM) serves it: the levels above the locations, the locations.
struct Site<'a> {
    /// Outermost first: the file's top level (http), the server body.
    levels: Vec<&'a [Directive]>,
    /// The server directive's line (None for NPM's Advanced text, which has no block).
    server_line: Option<usize>,
    locations: Vec<Location<'a>>,
    npm: Option<Npm>,
    context: Vec<Directive>,
}

/// What NPM writes around the Advanced text.
struct Npm {
    websockets: bool,
    /// NPM adds its own `location /` (the text has none).
    own_root: bool,
}

/// What Debian's `proxy_params` (nginx-common) sets.
const PROXY_PARAMS: &[(&str, &str)] = &[("Host", "$http_host"), ("X-Real-IP", "$remote_addr"), ("X-Forwarded-For", "$proxy_add_x_forwarded_for"), ("X-Forwarded-Proto", "$scheme")];

/// NPM's own `location /` sets these through `proxy.conf` (as shipped in 2.15).
const NPM_PROXY_CONF: &[(&str, &str)] = &[("Host", "$host"), ("X-Forwarded-Scheme", "$x_forwarded_scheme"), ("X-Forwarded-Proto", "$x_forwarded_proto"), ("X-Forwarded-For", "$proxy_add_x_forwarded_for"), ("X-Real-IP", "$remote_addr")];

fn locations_of(body: &[Directive]) -> Vec<Location<'_>> {
    body.iter()
        .filter(|d| d.name == "location" && d.block.is_some())
        .map(|d| {
            let (modifier, pattern) = match d.args.as_slice() {
                [m, p, ..] => (m.as_str(), p.as_str()),
                [p] => ("", p.as_str()),
                [] => ("", ""),
            };
            Location { directive: Some(d), modifier, pattern }
        })
        .collect()
}

/// The simple settings (`name value;` on a line of its own) of the distribution's nginx.conf.
/// The contexts are templates (`{{ site }}`), so they are read line by line, not parsed.
fn context_settings(s: &Situation) -> Vec<Directive> {
    let Some(text) = s.context.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) else { return Vec::new() };
    let setting = Regex::new(r"^\s*([a-z_0-9]+)\s+([^;{}#]+);\s*(#.*)?$").expect("static regex");
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| setting.captures(l).map(|c| Directive { name: c[1].to_string(), args: c[2].split_whitespace().map(String::from).collect(), line: i + 1, block: None }))
        .collect()
}

fn sites<'a>(s: &Situation, top: &'a [Directive]) -> Vec<Site<'a>> {
    if s.config.kind.name() == "npm" {
        let mut locations = locations_of(top);
        let own_root = !locations.iter().any(|l| l.modifier.is_empty() && l.pattern == "/");
        if own_root {
            locations.push(Location { directive: None, modifier: "", pattern: "/" });
        }
        return vec![Site { levels: vec![top], server_line: None, locations, npm: Some(Npm { websockets: s.config.websockets, own_root }), context: context_settings(s) }];
    }
    top.iter()
        .filter(|d| d.name == "server")
        .filter(|server| listens_for(server, s.transport))
        .filter_map(|server| {
            let body = server.block.as_deref()?;
            // Only servers that proxy: a plain-HTTP server that only redirects decides none of
            // the route checks.
            let locations = locations_of(body);
            let proxies = locations.iter().any(|l| l.body().iter().any(|d| d.name == "proxy_pass")) || body.iter().any(|d| d.name == "proxy_pass");
            proxies.then(|| Site { levels: vec![top, body], server_line: Some(server.line), locations, npm: None, context: context_settings(s) })
        })
        .collect()
}

/// Whether a server block answers the transport: a plain `listen` (or none: port 80) for
/// plain HTTP, a `listen ... ssl` for TLS.
fn listens_for(server: &Directive, transport: Transport) -> bool {
    let listens: Vec<&Directive> = server.block.as_deref().unwrap_or(&[]).iter().filter(|d| d.name == "listen").collect();
    let tls = |d: &&Directive| d.args.iter().any(|a| a == "ssl" || a == "quic");
    match transport {
        Transport::H1 => listens.is_empty() || listens.iter().any(|d| !tls(d)),
        Transport::H1Tls | Transport::H2 => listens.iter().any(tls),
    }
}

/// Over plain HTTP, the `return` of the plain server when it is the only one there and does
/// not proxy (certbot's `return 301 https://...`): every check meets it instead of the backend.
fn redirect_only<'a>(s: &Situation, top: &'a [Directive]) -> Option<&'a Directive> {
    if s.transport != Transport::H1 || s.config.kind.name() == "npm" || !sites(s, top).is_empty() {
        return None;
    }
    let plain = top.iter().filter(|d| d.name == "server" && listens_for(d, Transport::H1));
    let returns: Vec<&Directive> = plain.flat_map(|d| all_directives(d.block.as_deref().unwrap_or(&[]))).filter(|d| d.name == "return").collect();
    returns.iter().find(|d| d.arg(0).starts_with('3')).or(returns.first()).copied()
}

/// The hop-by-hop header names HTTP/2 forbids in a response (RFC 9113, 8.2.2).
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"];

/// The directives in force in a location: the levels above it, then its own body.
struct InForce<'a> {
    levels: Vec<&'a [Directive]>,
    location: &'a Location<'a>,
    npm: Option<&'a Npm>,
    /// The http-level settings of the distribution's nginx.conf around the site (NPM's 90 s
    /// timeouts and 2000m body size), below every level of the user's.
    context: &'a [Directive],
}

impl<'a> InForce<'a> {
    fn all_levels(&self) -> Vec<&'a [Directive]> {
        let mut levels = self.levels.clone();
        levels.push(self.location.body());
        levels
    }

    /// The nearest setting of a scalar directive in the user's config.
    fn scalar(&self, name: &str) -> Option<&'a Directive> {
        self.all_levels().into_iter().rev().find_map(|level| level.iter().rev().find(|d| d.name == name))
    }

    /// The value in force, the distribution's nginx.conf included (its line is not the user's,
    /// so this is for deciding, not for naming a line).
    fn value(&self, name: &str) -> Option<&'a str> {
        self.scalar(name).or_else(|| self.context.iter().rev().find(|d| d.name == name)).map(|d| d.arg(0))
    }

    /// Header names `proxy_set_header` sends here, with the line that sets each (None: NPM's
    /// own lines), from the nearest level that has any.
    fn headers(&self) -> Vec<(String, String, Option<&'a Directive>)> {
        if self.location.directive.is_none() {
            // NPM's own location /: proxy.conf, and the switch's lines when on.
            let npm = self.npm.expect("only NPM has a location without a directive");
            let mut h: Vec<(String, String, Option<&Directive>)> = NPM_PROXY_CONF.iter().map(|(n, v)| (n.to_string(), v.to_string(), None)).collect();
            if npm.websockets {
                h.push(("Upgrade".into(), "$http_upgrade".into(), None));
                h.push(("Connection".into(), "$http_connection".into(), None));
            }
            return h;
        }
        let own = |level: &'a [Directive]| {
            let mut set = Vec::new();
            for d in level {
                if d.name == "proxy_set_header" {
                    set.push((d.arg(0).to_string(), d.arg(1).to_string(), Some(d)));
                } else if d.name == "include" && d.arg(0).ends_with("proxy_params") {
                    // Debian's proxy_params, as nginx-common ships it.
                    for (n, v) in PROXY_PARAMS {
                        set.push((n.to_string(), v.to_string(), Some(d)));
                    }
                }
            }
            set
        };
        let mut levels = self.all_levels();
        if let Some(npm) = self.npm {
            if npm.websockets {
                // The switch's server-level lines come first at NPM's server level.
                let mut server = own(levels[0]);
                server.insert(0, ("Connection".into(), "$http_connection".into(), None));
                server.insert(0, ("Upgrade".into(), "$http_upgrade".into(), None));
                let location = own(self.location.body());
                return if location.is_empty() { server } else { location };
            }
        }
        while let Some(level) = levels.pop() {
            let set = own(level);
            if !set.is_empty() {
                return set;
            }
        }
        Vec::new()
    }

    /// The lines of an all-or-nothing directive (`add_header`, `proxy_hide_header`) in force:
    /// those of the nearest level that has any.
    fn nearest(&self, name: &str) -> Vec<&'a Directive> {
        self.all_levels().into_iter().rev().map(|level| level.iter().filter(|d| d.name == name).collect::<Vec<_>>()).find(|set| !set.is_empty()).unwrap_or_default()
    }

    /// The `proxy_set_header` lines of the nearest level above the location that has any:
    /// what the location inherits when it has none of its own.
    fn inherited_headers(&self) -> Vec<&'a Directive> {
        self.levels.iter().rev().map(|level| level.iter().filter(|d| d.name == "proxy_set_header").collect::<Vec<_>>()).find(|set| !set.is_empty()).unwrap_or_default()
    }

    fn own_headers(&self) -> Vec<&'a Directive> {
        self.location.body().iter().filter(|d| d.name == "proxy_set_header").collect()
    }

    fn sends(&self, header: &str) -> Option<String> {
        self.headers().into_iter().find(|(n, _, _)| n.eq_ignore_ascii_case(header)).map(|(_, v, _)| v)
    }

    fn http11(&self) -> bool {
        self.npm.is_some_and(|n| n.websockets) || self.value("proxy_http_version") == Some("1.1")
    }

    fn upgrades(&self) -> bool {
        let connection_upgrades = self.sends("Connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade") || v.starts_with('$') && v != "$http_host");
        self.sends("Upgrade").is_some() && connection_upgrades && self.http11()
    }
}

/// nginx's time syntax (`60`, `60s`, `1m`, `1h`, `500ms`, `1m30s`).
pub fn duration(text: &str) -> Option<Duration> {
    let re = Regex::new(r"(\d+)(ms|s|m|h|d|w|M|y)?").expect("static regex");
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let c = re.captures(rest).filter(|c| c.get(0).is_some_and(|m| m.start() == 0))?;
        let n: u64 = c[1].parse().ok()?;
        total += match c.get(2).map(|m| m.as_str()) {
            Some("ms") => Duration::from_millis(n),
            None | Some("s") => Duration::from_secs(n),
            Some("m") => Duration::from_secs(n * 60),
            Some("h") => Duration::from_secs(n * 3600),
            Some("d") => Duration::from_secs(n * 86400),
            Some("w") => Duration::from_secs(n * 7 * 86400),
            Some("M") => Duration::from_secs(n * 30 * 86400),
            _ => Duration::from_secs(n * 365 * 86400),
        };
        rest = &rest[c[0].len()..];
    }
    Some(total)
}

/// nginx's size syntax (`1m`, `50M`, `1024k`, `0` for unlimited).
pub fn size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = number.parse().ok()?;
    Some(match unit {
        "" => n,
        "k" | "K" => n << 10,
        "m" | "M" => n << 20,
        "g" | "G" => n << 30,
        _ => return None,
    })
}

/// The size `body.large` sends (50 MB).
const LARGE_BODY: u64 = 50 * 1000 * 1000;

/// The text of a line of the user's file.
fn line_text(text: &str, line: usize) -> String {
    text.lines().nth(line.saturating_sub(1)).unwrap_or("").trim().to_string()
}

struct Finder<'a> {
    s: &'a Situation<'a>,
    file: PathBuf,
    causes: Vec<Cause>,
}

impl Finder<'_> {
    fn at(&mut self, check: &str, line: usize, why: String) {
        let cause = Cause { check: check.into(), file: self.file.clone(), line, text: line_text(self.s.text, line), why };
        if !self.causes.contains(&cause) {
            self.causes.push(cause);
        }
    }

    /// A cause at the line of a directive in the user's file, or, for NPM's own location /,
    /// at the switch's header line.
    fn at_location(&mut self, check: &str, here: &InForce, why: String) {
        match here.location.directive {
            Some(d) => self.at(check, d.line, why),
            None => {
                // NPM writes its own `location /` right after the Advanced text.
                let end = self.s.text.lines().count().max(1);
                self.at(check, end, format!("NPM's own `location /`, which NPM adds after the end of the Advanced text: {why}"));
            }
        }
    }

    fn at_npm_root(&mut self, check: &str, why: String) {
        let why = format!("NPM's own `location /` (not in the Advanced text): {why}");
        match switch_line(self.s.text) {
            Some(line) => self.at(check, line, why),
            None => self.at(check, 1, why),
        }
    }

    /// The context's line that turns `name` on (`gzip on` in Debian's nginx.conf). The
    /// contexts are templates (`{{ site }}`), so the line is found by its words, not parsed.
    fn in_context(&mut self, check: &str, name: &str, why: String) -> bool {
        let Some(context) = &self.s.context else { return false };
        let Ok(text) = std::fs::read_to_string(context) else { return false };
        let on = Regex::new(&format!(r"^\s*{}\s+on\s*;", regex::escape(name))).expect("escaped regex");
        let Some(index) = text.lines().position(|l| on.is_match(l)) else { return false };
        let cause = Cause { check: check.into(), file: context.clone(), line: index + 1, text: line_text(&text, index + 1), why };
        if !self.causes.contains(&cause) {
            self.causes.push(cause);
        }
        true
    }
}


/// The Advanced text's server-level directive that duplicates one of the switch's lines, when
/// nginx refused the config for a duplicate (`"proxy_http_version" directive is duplicate`).
fn npm_duplicate<'a>(s: &Situation, top: &'a [Directive]) -> Option<&'a Directive> {
    if s.config.kind.name() != "npm" || !s.config.websockets {
        return None;
    }
    let message = s.setup_error.as_deref()?;
    let name = Regex::new(r#""([a-z_]+)" directive is duplicate"#).expect("static regex").captures(message)?[1].to_string();
    (name == "proxy_http_version").then(|| top.iter().find(|d| d.name == name)).flatten()
}

/// The `# websockets:` header line of an NPM config (the switch).
fn switch_line(text: &str) -> Option<usize> {
    text.lines().position(|l| l.trim_start().strip_prefix('#').is_some_and(|c| c.trim_start().starts_with("websockets:"))).map(|i| i + 1)
}

const ORIGIN_HEADERS: &[&str] = &["Host", "X-Forwarded-Host", "X-Forwarded-Proto"];
const FORWARDED_HEADERS: &[&str] = &["Host", "X-Real-IP", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"];

/// The causes nginx's (or NPM's) config gives for the failed checks.
pub fn causes(s: &Situation, failed: &[&str]) -> Result<Vec<Cause>, String> {
    let top = parse(s.text)?;
    let mut f = Finder { s, file: s.config.path.clone(), causes: Vec::new() };
    if failed.contains(&SETUP) {
        if let Some(d) = npm_duplicate(s, &top) {
            f.at(SETUP, d.line, format!("Websockets Support writes `{} 1.1;` at server level too, and nginx refuses a directive twice in one block: NPM takes the host offline", d.name));
        }
    }
    if let Some(d) = redirect_only(s, &top) {
        for check in failed.iter().filter(|c| **c != SETUP && **c != "tls.redirect") {
            f.at(check, d.line, format!("over plain HTTP this server answers every request with `return {}` and proxies nothing: no request reaches the backend (check over HTTPS: --transport h1-tls)", d.args.join(" ")));
        }
    }
    for site in sites(s, &top) {
        for check in failed {
            site_causes(&mut f, &site, check);
        }
    }
    for check in failed {
        if *check == "lb.sticky" {
            for up in top.iter().filter(|d| d.name == "upstream") {
                let body = up.block.as_deref().unwrap_or(&[]);
                if !body.iter().any(|d| matches!(d.name.as_str(), "ip_hash" | "hash" | "sticky")) {
                    f.at(check, up.line, "no `ip_hash` (or `hash`): each request goes to the next server in turn, so a session's WebSocket and its requests land on different backends".into());
                }
            }
        }
        if *check == "tls.redirect" {
            for d in all_directives(&top).into_iter().filter(|d| d.name == "return" && d.arg(0) == "301") {
                f.at(check, d.line, "301 lets a browser turn the redirected POST into a GET (the upload is lost): 308 keeps the method and body".into());
            }
        }
        if *check == "h2.headers" {
            for d in all_directives(&top).into_iter().filter(|d| d.name == "add_header" && HOP_BY_HOP.contains(&d.arg(0).to_ascii_lowercase().as_str())) {
                f.at(check, d.line, format!("{} is a hop-by-hop header: HTTP/2 forbids it and browsers refuse the response", d.arg(0)));
            }
        }
    }
    Ok(f.causes)
}

fn all_directives(body: &[Directive]) -> Vec<&Directive> {
    let mut out = Vec::new();
    for d in body {
        out.push(d);
        if let Some(b) = &d.block {
            out.extend(all_directives(b));
        }
    }
    out
}

/// The distinct locations serving the paths of `check`, with what is in force in each.
fn served<'a>(site: &'a Site<'a>, check: &str, profile: mock_server::Profile) -> Vec<InForce<'a>> {
    let mut seen: Vec<*const Location> = Vec::new();
    let mut out = Vec::new();
    for path in paths(check, profile) {
        if let Some(l) = serving(&site.locations, path) {
            if !seen.contains(&(l as *const _)) {
                seen.push(l as *const _);
                out.push(InForce { levels: site.levels.clone(), location: l, npm: site.npm.as_ref(), context: &site.context });
            }
        }
    }
    out
}

/// What keeps the browser's `Last-Event-ID` from the backend where `here` is in force: a
/// `proxy_set_header Last-Event-ID` of its own, or `proxy_pass_request_headers off`.
fn resume_blockers<'a>(here: &InForce<'a>) -> Vec<&'a Directive> {
    let mut out: Vec<&Directive> = here.nearest("proxy_set_header").into_iter().filter(|d| d.arg(0).eq_ignore_ascii_case("last-event-id") && d.arg(1) != "$http_last_event_id").collect();
    out.extend(here.scalar("proxy_pass_request_headers").filter(|d| d.arg(0) == "off"));
    out
}

fn site_causes(f: &mut Finder, site: &Site, check: &str) {
    let idle = f.s.idle;
    for here in served(site, check, f.s.profile) {
        prefix_strip(f, &here, check);
        if f.s.transport == Transport::H2 && check != "h2.headers" {
            for d in here.nearest("add_header").into_iter().filter(|d| HOP_BY_HOP.contains(&d.arg(0).to_ascii_lowercase().as_str())) {
                f.at(check, d.line, format!("{} is a hop-by-hop header: over HTTP/2 the client (a browser too) refuses the response (RST_STREAM PROTOCOL_ERROR)", d.arg(0)));
            }
        }
        match check {
            "ws.upgrade" | "ws.terminal" | "ws.idle" | "auth.origin" if !here.upgrades() => upgrade_cause(f, site, &here, check),
            "ws.idle" | "sse.idle" | "http.slow" => {
                let timeout = here.scalar("proxy_read_timeout");
                let value = here.value("proxy_read_timeout").and_then(duration).unwrap_or(Duration::from_secs(60));
                if too_short(value, idle) {
                    match timeout {
                        Some(d) => f.at(check, d.line, format!("{}s is not longer than the {}s idle period: nginx closes a connection silent for that long", value.as_secs(), idle.as_secs())),
                        None => f.at_location(check, &here, format!("no proxy_read_timeout here: the default 60s closes a connection silent for the {}s idle period", idle.as_secs())),
                    }
                }
            }
            "auth.origin" => origin_cause(f, &here, check),
            super::PAGE => {
                for d in here.nearest("add_header").into_iter().filter(|d| d.arg(0).eq_ignore_ascii_case("content-type")) {
                    f.at(check, d.line, format!("sends Content-Type {} with the app's own page too: the browser does not run a page that is not text/html, so nothing of the app starts", d.args.get(1).map(String::as_str).unwrap_or("")));
                }
                for d in here.nearest("proxy_hide_header").into_iter().filter(|d| ["content-type", "content-encoding"].contains(&d.arg(0).to_ascii_lowercase().as_str())) {
                    f.at(check, d.line, format!("drops the backend's {} from the app's own page: the browser cannot read the page, so nothing of the app starts", d.arg(0)));
                }
            }
            "browser.reconnect" => {
                for d in resume_blockers(&here) {
                    let why = if d.name == "proxy_pass_request_headers" {
                        "passes the backend none of the browser's headers but those set here: its Last-Event-ID is lost, and a reconnected durable stream starts over".to_string()
                    } else {
                        format!("sends the backend Last-Event-ID {:?} instead of the browser's: a reconnected durable stream does not resume where it stopped", d.arg(1))
                    };
                    f.at(check, d.line, why);
                }
            }
            "sse.stream" | "sse.headers" => {
                if check == "sse.headers" {
                    for d in here.nearest("proxy_hide_header").into_iter().filter(|d| ["content-type", "cache-control"].contains(&d.arg(0).to_ascii_lowercase().as_str())) {
                        f.at(check, d.line, format!("drops the backend's {}: the stream reaches the browser without it", d.arg(0)));
                    }
                    for d in here.nearest("add_header").into_iter().filter(|d| d.arg(0).eq_ignore_ascii_case("content-type")) {
                        f.at(check, d.line, format!("sends Content-Type {} on every response of this block, the event streams included: an EventSource refuses any type but text/event-stream", d.args.get(1).map(String::as_str).unwrap_or("")));
                    }
                }
                match here.scalar("proxy_buffering") {
                    Some(d) if d.arg(0) == "on" => f.at(check, d.line, "proxy_buffering on holds the stream's events in nginx's buffers instead of passing each one as it comes".into()),
                    Some(_) => {}
                    None => f.at_location(check, &here, "no proxy_buffering off here: nginx buffers the response (on by default) unless the backend sends X-Accel-Buffering: no".into()),
                }
                gzip_cause(f, &here, check);
            }
            "compress.sse" => gzip_cause(f, &here, check),
            "compress.single" if here.nearest("proxy_hide_header").iter().any(|d| d.arg(0).eq_ignore_ascii_case("content-encoding")) => {
                for d in here.nearest("proxy_hide_header").into_iter().filter(|d| d.arg(0).eq_ignore_ascii_case("content-encoding")) {
                    f.at(check, d.line, "drops the backend's Content-Encoding: its gzip body reaches the client as if it were plain (ERR_CONTENT_DECODING_FAILED or garbage)".into());
                }
            }
            "compress.single" => match here.scalar("gzip") {
                Some(d) if d.arg(0) == "on" => f.at(check, d.line, "gzip on compresses what the backend already compressed, or the other way round".into()),
                Some(_) => {}
                None => {
                    if !f.in_context(check, "gzip", "your distribution's nginx.conf turns gzip on for every site (you never wrote it): a response is compressed by nginx as well as the backend".into()) {
                        f.at_location(check, &here, "gzip is on from the context around this site".into());
                    }
                }
            },
            "body.large" => {
                let limit = here.scalar("client_max_body_size");
                let value = here.value("client_max_body_size").and_then(size).unwrap_or(1 << 20);
                if value != 0 && value < LARGE_BODY {
                    match limit {
                        Some(d) => f.at(check, d.line, format!("{} is below the 50 MB upload: nginx answers 413", d.arg(0))),
                        None => match (here.location.directive, site.server_line) {
                            (_, Some(line)) => f.at(check, line, "no client_max_body_size in this server: the default 1m answers 413 to a 50 MB upload".into()),
                            _ => f.at_location(check, &here, "no client_max_body_size: the default 1m answers 413 to a 50 MB upload".into()),
                        },
                    }
                }
            }
            "body.streaming" => match here.scalar("proxy_request_buffering") {
                Some(d) if d.arg(0) == "on" => f.at(check, d.line, "nginx reads the whole upload before sending the backend a byte".into()),
                Some(_) => {
                    if !here.http11() {
                        f.at_location(check, &here, "no proxy_http_version 1.1: a chunked upload is buffered whole over HTTP/1.0 upstream".into());
                    }
                }
                None => f.at_location(check, &here, "no proxy_request_buffering off: nginx reads the whole upload before sending the backend a byte (on by default)".into()),
            },
            "headers.forwarded" => {
                let missing: Vec<&str> = FORWARDED_HEADERS.iter().copied().filter(|h| here.sends(h).is_none()).collect();
                if !missing.is_empty() {
                    let why = dropped_or_missing(&here, &missing);
                    f.at_location(check, &here, why);
                }
            }
            _ => {}
        }
    }
}

/// Why headers are missing in a location: dropped by its own `proxy_set_header` lines (nginx's
/// all-or-nothing inheritance) or never set.
fn dropped_or_missing(here: &InForce, missing: &[&str]) -> String {
    let inherited = here.inherited_headers();
    let dropped: Vec<&str> = missing.iter().copied().filter(|h| inherited.iter().any(|d| d.arg(0).eq_ignore_ascii_case(h))).collect();
    if here.location.directive.is_none() {
        return format!("proxy.conf sets its own proxy_set_header lines, so no server-level one reaches it: it sends no {}", missing.join(", "));
    }
    if !dropped.is_empty() && !here.own_headers().is_empty() {
        let lines: Vec<String> = inherited.iter().filter(|d| dropped.iter().any(|h| d.arg(0).eq_ignore_ascii_case(h))).map(|d| d.line.to_string()).collect();
        format!(
            "its own proxy_set_header lines (from line {}) replace every inherited one, so {} from line(s) {} never reach it (nginx inherits proxy_set_header only into a block that sets none)",
            here.own_headers()[0].line,
            dropped.join(", "),
            lines.join(", ")
        )
    } else {
        format!("sends no {} to the backend", missing.join(", "))
    }
}

fn upgrade_cause(f: &mut Finder, site: &Site, here: &InForce, check: &str) {
    if let Some(npm) = site.npm.as_ref().filter(|n| !n.websockets && here.location.directive.is_none()) {
        let _ = npm;
        let server_upgrade = site.levels[0].iter().find(|d| d.name == "proxy_set_header" && d.arg(0).eq_ignore_ascii_case("upgrade"));
        match server_upgrade {
            Some(d) => f.at(check, d.line, "this server-level line never reaches NPM's own `location /`, which sets its headers through proxy.conf: turn on Websockets Support (or add a custom location for the WebSocket paths)".into()),
            None => f.at_npm_root(check, "Websockets Support is off, so NPM's `location /` passes no Upgrade/Connection headers: turn the switch on".into()),
        }
        return;
    }
    if here.sends("Upgrade").is_none() {
        let why = if !here.own_headers().is_empty() && here.inherited_headers().iter().any(|d| d.arg(0).eq_ignore_ascii_case("upgrade")) {
            dropped_or_missing(here, &["Upgrade"])
        } else {
            "serves the WebSocket path without proxy_set_header Upgrade $http_upgrade and Connection \"upgrade\": the backend sees a plain GET and answers 400".into()
        };
        f.at_location(check, here, why);
        return;
    }
    let connection = here.headers().into_iter().find(|(n, _, _)| n.eq_ignore_ascii_case("connection"));
    match connection {
        Some((_, v, Some(d))) if !(v.eq_ignore_ascii_case("upgrade") || v.starts_with('$')) => f.at(check, d.line, format!("Connection \"{v}\" here removes the upgrade the browser asked for")),
        None => f.at_location(check, here, "no proxy_set_header Connection \"upgrade\": nginx sends Connection: close and the upgrade is lost".into()),
        _ => {}
    }
    if !here.http11() {
        match here.scalar("proxy_http_version") {
            Some(d) => f.at(check, d.line, "a WebSocket upgrade needs HTTP/1.1 to the backend".into()),
            None => f.at_location(check, here, "no proxy_http_version 1.1: older nginx (1.22) speaks HTTP/1.0 to the backend, which cannot upgrade".into()),
        }
    }
}

fn origin_cause(f: &mut Finder, here: &InForce, check: &str) {
    if let Some((_, _, Some(d))) = here.headers().into_iter().find(|(n, _, _)| n.eq_ignore_ascii_case("origin")) {
        f.at(check, d.line, "replaces the browser's Origin: the backend's cross-site check now passes for a page on any site, which can open the terminal WebSocket of a logged-in user".into());
    }
    // The backend rebuilds the origin from X-Forwarded-Host or Host, and X-Forwarded-Proto:
    // nginx's default Host is the upstream's address (`$proxy_host`).
    let public_host = |h: &str| here.sends(h).is_some_and(|v| ["$host", "$http_host", "$server_name"].iter().any(|var| v.contains(var)));
    if public_host("Host") || public_host("X-Forwarded-Host") {
        if f.s.transport != Transport::H1 && here.sends("X-Forwarded-Proto").is_none() {
            let why = format!("{}; behind TLS the backend then rebuilds http:// while the browser's Origin is https://, and refuses the upgrade (403 Invalid origin)", dropped_or_missing(here, &["X-Forwarded-Proto"]));
            f.at_location(check, here, why);
        }
        return;
    }
    // Host set to another name (`$proxy_host`) is named at its own line.
    if let Some((_, value, Some(d))) = here.headers().into_iter().find(|(n, _, _)| n.eq_ignore_ascii_case("host")) {
        f.at(check, d.line, format!("Host {value} is the upstream's name, not the one the browser asked for, and no X-Forwarded-Host names it either: with a UI password the backend rebuilds the wrong origin and refuses the upgrade (403 Invalid origin)"));
        return;
    }
    let missing: Vec<&str> = ORIGIN_HEADERS.iter().copied().filter(|h| here.sends(h).is_none()).collect();
    let why = format!("{}; with a UI password the backend rebuilds the wrong origin and refuses the upgrade (403 Invalid origin)", dropped_or_missing(here, &missing));
    f.at_location(check, here, why);
}

fn gzip_cause(f: &mut Finder, here: &InForce, check: &str) {
    let gzip_on = here.scalar("gzip").map(|d| d.arg(0) == "on");
    if gzip_on == Some(false) {
        return;
    }
    if let Some(types) = here.scalar("gzip_types").filter(|d| d.args.iter().any(|a| a == "text/event-stream" || a == "*")) {
        f.at(check, types.line, "gzip_types lists text/event-stream: nginx compresses the stream and holds events in the compressor's buffer".into());
        if let Some(d) = here.scalar("gzip") {
            f.at(check, d.line, "gzip is on for this stream".into());
        } else {
            f.in_context(check, "gzip", "your distribution's nginx.conf turns gzip on (you never wrote it)".into());
        }
    }
}

/// `proxy_pass http://backend/` (a URI part) replaces the location's prefix: the backend sees
/// `/mock/request` for `/api/mock/request`.
fn prefix_strip(f: &mut Finder, here: &InForce, check: &str) {
    let Some(pass) = here.location.body().iter().find(|d| d.name == "proxy_pass") else { return };
    let url = pass.arg(0);
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else { return };
    let Some(slash) = rest.find('/') else { return };
    let uri = &rest[slash..];
    let prefix_location = here.location.modifier.is_empty() || here.location.modifier == "^~";
    if prefix_location && uri != here.location.pattern && !uri.contains('$') {
        f.at(check, pass.line, format!("the URI part `{uri}` replaces the location's `{}`: the backend gets another path than the browser asked for", here.location.pattern));
    }
}

/// What to add to each block (by the block's line) and what to replace.
#[derive(Default)]
struct Plan {
    /// (block line, directive text) in order.
    adds: Vec<(usize, String)>,
    replaces: Vec<(usize, String)>,
    /// Locations whose inherited `proxy_set_header` lines must be copied in (they get their
    /// first own one).
    copy_inherited: Vec<(usize, Vec<String>)>,
    switch_on: bool,
}

impl Plan {
    fn add(&mut self, block: usize, directive: impl Into<String>) {
        let d = directive.into();
        if !self.adds.iter().any(|(b, t)| *b == block && *t == d) {
            self.adds.push((block, d));
        }
    }

    fn replace(&mut self, line: usize, directive: impl Into<String>) {
        let d = directive.into();
        if !self.replaces.iter().any(|(l, _)| *l == line) {
            self.replaces.push((line, d));
        }
    }

    /// Sets a scalar directive in a block: replaces the block's own line, else adds one.
    fn set(&mut self, body: &[Directive], block: usize, name: &str, value: &str) {
        match body.iter().rev().find(|d| d.name == name) {
            Some(d) => self.replace(d.line, format!("{name} {value};")),
            None => self.add(block, format!("{name} {value};")),
        }
    }

    /// Adds `proxy_set_header` lines to a location, first copying in what it inherited when
    /// it has none of its own (it would drop them).
    fn headers(&mut self, here: &InForce, block: usize, headers: &[(&str, &str)]) {
        if here.own_headers().is_empty() && !self.copy_inherited.iter().any(|(b, _)| *b == block) {
            let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
            let inherited: Vec<String> = here
                .inherited_headers()
                .iter()
                .filter(|d| !names.iter().any(|n| d.arg(0).eq_ignore_ascii_case(n)))
                .map(|d| format!("proxy_set_header {} {};", d.arg(0), quote(d.arg(1))))
                .collect();
            self.copy_inherited.push((block, inherited));
        }
        for (name, value) in headers {
            match here.own_headers().into_iter().find(|d| d.arg(0).eq_ignore_ascii_case(name)) {
                Some(d) => {
                    if d.arg(1) != *value {
                        self.replace(d.line, format!("proxy_set_header {name} {};", quote(value)));
                    }
                }
                None => self.add(block, format!("proxy_set_header {name} {};", quote(value))),
            }
        }
    }
}

fn quote(value: &str) -> String {
    if value.is_empty() || value.contains(char::is_whitespace) || value.contains(';') || value.contains('{') {
        format!("\"{value}\"")
    } else if value == "upgrade" {
        "\"upgrade\"".into()
    } else {
        value.to_string()
    }
}

/// The corrected copy's edits for nginx's (or NPM's) failed checks.
pub fn correct(s: &Situation, failed: &[&str]) -> Result<Correction, String> {
    let top = parse(s.text).map_err(|e| format!("cannot read {}: {e}", s.config.path.display()))?;
    let mut plan = Plan::default();
    let mut correction = Correction::default();
    let sites = sites(s, &top);
    let redirect = redirect_only(s, &top);
    if sites.is_empty() && redirect.is_none() {
        return Err("no server block that proxies: nothing to correct".into());
    }
    for check in failed {
        if let Some(d) = redirect.filter(|_| *check != SETUP && *check != "tls.redirect") {
            correction.unfixed.push((check.to_string(), format!("over plain HTTP the only server answers `return {}` (line {}), by design: check the HTTPS listener (--transport h1-tls)", d.args.join(" "), d.line)));
            continue;
        }
        if *check == SETUP {
            match npm_duplicate(s, &top) {
                Some(d) => {
                    plan.replace(d.line, String::new());
                    correction.fixed.push((SETUP.into(), format!("the Advanced text's `{}` (line {}) removed: the switch writes it", d.name, d.line)));
                }
                None => correction.unfixed.push((SETUP.into(), format!("no automatic fix for the proxy's refusal: {}", s.setup_error.as_deref().unwrap_or("?")))),
            }
            continue;
        }
        let mut did = Vec::new();
        for site in &sites {
            if let Some(what) = site_fix(s, &mut plan, site, check) {
                did.push(what);
            }
        }
        if *check == "lb.sticky" {
            for up in top.iter().filter(|d| d.name == "upstream" && !d.block.as_deref().unwrap_or(&[]).iter().any(|d| matches!(d.name.as_str(), "ip_hash" | "hash"))) {
                plan.add(up.line, "ip_hash;");
                did.push(format!("ip_hash in upstream {}", up.arg(0)));
            }
        }
        if *check == "tls.redirect" {
            for d in all_directives(&top).into_iter().filter(|d| d.name == "return" && d.arg(0) == "301") {
                plan.replace(d.line, format!("return 308 {};", d.args[1..].join(" ")));
                did.push("return 308 instead of 301".into());
            }
        }
        did.dedup();
        match did.is_empty() {
            true => correction.unfixed.push((check.to_string(), unfixable(check, &sites))),
            false => correction.fixed.push((check.to_string(), did.join("; "))),
        }
    }
    correction.edits = edits(s.text, &top, &plan);
    Ok(correction)
}

fn unfixable(check: &str, sites: &[Site]) -> String {
    match check {
        "h2.websocket" => "nginx does not implement WebSocket over HTTP/2: no config change makes it".into(),
        "headers.forwarded" if sites.iter().any(|s| s.npm.as_ref().is_some_and(|n| n.own_root)) => "NPM's own location / sets its headers through proxy.conf: add a custom location (or a `location /` in the Advanced text) with the missing proxy_set_header lines".into(),
        _ => super::NO_FIX_HERE.into(),
    }
}

/// Plans the fix of one check in one site; what it changes, or None when it has nothing to
/// change there.
fn site_fix(s: &Situation, plan: &mut Plan, site: &Site, check: &str) -> Option<String> {
    let mut what: Vec<String> = Vec::new();
    // A server-level directive goes in the server block, or at the top of NPM's Advanced text.
    let server_block = site.server_line.unwrap_or(0);
    let server_body = site.levels.last().copied().unwrap_or(&[]);
    let npm_root_only = |here: &InForce| here.location.directive.is_none();
    for here in served(site, check, s.profile) {
        let block = here.location.directive.map(|d| d.line);
        match check {
            "ws.upgrade" | "ws.terminal" | "ws.idle" | "auth.origin" if !here.upgrades() => {
                if npm_root_only(&here) {
                    plan.switch_on = true;
                    // The switch writes proxy_http_version 1.1 at server level: a second one
                    // there is a duplicate nginx refuses.
                    if let Some(d) = server_body.iter().find(|d| d.name == "proxy_http_version") {
                        plan.replace(d.line, String::new());
                    }
                    what.push("Websockets Support on (`# websockets: on`)".into());
                    continue;
                }
                let block = block?;
                let exact = here.location.modifier == "=";
                if !here.http11() {
                    plan.set(here.location.body(), block, "proxy_http_version", "1.1");
                }
                let connection = if exact { "upgrade" } else { "$http_connection" };
                plan.headers(&here, block, &[("Upgrade", "$http_upgrade"), ("Connection", connection)]);
                what.push(format!("Upgrade/Connection and HTTP/1.1 in the location at line {block}"));
                if check == "ws.idle" {
                    timeouts(plan, &here, block, s.idle);
                }
            }
            "ws.idle" | "sse.idle" | "http.slow" => {
                let value = here.value("proxy_read_timeout").and_then(duration).unwrap_or(Duration::from_secs(60));
                if too_short(value, s.idle) {
                    match block {
                        Some(block) => timeouts(plan, &here, block, s.idle),
                        None => {
                            plan.set(server_body, server_block, "proxy_read_timeout", "3600s");
                            plan.set(server_body, server_block, "proxy_send_timeout", "3600s");
                        }
                    }
                    what.push("proxy_read_timeout/proxy_send_timeout 3600s".into());
                }
            }
            "auth.origin" => {
                let missing: Vec<&str> = ORIGIN_HEADERS.iter().copied().filter(|h| here.sends(h).is_none()).collect();
                if here.sends("Host").is_some() {
                    continue;
                }
                let block = block?;
                let mut add: Vec<(String, String)> = Vec::new();
                // The inherited lines the location's own ones dropped, as written.
                for d in here.inherited_headers() {
                    if here.sends(d.arg(0)).is_none() {
                        add.push((d.arg(0).to_string(), d.arg(1).to_string()));
                    }
                }
                for h in missing {
                    if !add.iter().any(|(n, _)| n.eq_ignore_ascii_case(h)) {
                        add.push((h.to_string(), if h == "X-Forwarded-Proto" { "$scheme".into() } else { "$host".into() }));
                    }
                }
                let add: Vec<(&str, &str)> = add.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                plan.headers(&here, block, &add);
                what.push(format!("the dropped proxy_set_header lines repeated in the location at line {block}"));
            }
            "sse.stream" | "sse.headers" | "compress.sse" => {
                let gzip_on = here.scalar("gzip").map(|d| d.arg(0) == "on");
                let event_types = here.scalar("gzip_types").is_some_and(|d| d.args.iter().any(|a| a == "text/event-stream" || a == "*"));
                let body = here.location.body();
                let target = block.unwrap_or(server_block);
                let target_body = if block.is_some() { body } else { server_body };
                if check != "compress.sse" && here.scalar("proxy_buffering").map(|d| d.arg(0) == "on").unwrap_or(true) {
                    plan.set(target_body, target, "proxy_buffering", "off");
                    what.push("proxy_buffering off".into());
                }
                if gzip_on != Some(false) && (event_types || check == "compress.sse") {
                    plan.set(target_body, target, "gzip", "off");
                    what.push("gzip off on the stream".into());
                }
            }
            "browser.reconnect" => {
                for d in resume_blockers(&here) {
                    plan.replace(d.line, String::new());
                    what.push(format!("{} removed (line {})", d.name, d.line));
                }
            }
            "compress.single" => {
                plan.set(server_body, server_block, "gzip", "off");
                what.push("gzip off in the server (the backend compresses)".into());
            }
            "body.large" => {
                let limit = here.scalar("client_max_body_size");
                match limit.filter(|d| here.location.body().iter().any(|x| std::ptr::eq(x, *d))) {
                    Some(d) => plan.replace(d.line, "client_max_body_size 50M;"),
                    None => plan.set(server_body, server_block, "client_max_body_size", "50M"),
                }
                what.push("client_max_body_size 50M".into());
            }
            "body.streaming" => {
                match here.scalar("proxy_request_buffering").filter(|d| here.location.body().iter().any(|x| std::ptr::eq(x, *d))) {
                    Some(d) => plan.replace(d.line, "proxy_request_buffering off;"),
                    None => plan.set(server_body, server_block, "proxy_request_buffering", "off"),
                }
                // Not for NPM's own location /: the switch writes proxy_http_version at server
                // level, and a second one there is a duplicate nginx refuses.
                if !here.http11() && !npm_root_only(&here) {
                    match block {
                        Some(b) => plan.set(here.location.body(), b, "proxy_http_version", "1.1"),
                        None => plan.set(server_body, server_block, "proxy_http_version", "1.1"),
                    }
                }
                what.push("proxy_request_buffering off".into());
            }
            "headers.forwarded" => {
                if npm_root_only(&here) {
                    return None;
                }
                let block = block?;
                let missing: Vec<(&str, &str)> = FORWARDED_HEADERS
                    .iter()
                    .copied()
                    .filter(|h| here.sends(h).is_none())
                    .map(|h| (h, match h {
                        "X-Real-IP" => "$remote_addr",
                        "X-Forwarded-For" => "$proxy_add_x_forwarded_for",
                        "X-Forwarded-Proto" => "$scheme",
                        _ => "$host",
                    }))
                    .collect();
                if !missing.is_empty() {
                    plan.headers(&here, block, &missing);
                    what.push(format!("the forwarded headers in the location at line {block}"));
                }
            }
            _ => {}
        }
    }
    if plan.switch_on {
        what.dedup();
    }
    (!what.is_empty()).then(|| {
        what.dedup();
        what.join(", ")
    })
}

fn timeouts(plan: &mut Plan, here: &InForce, block: usize, idle: Duration) {
    for name in ["proxy_read_timeout", "proxy_send_timeout"] {
        let value = here.value(name).and_then(duration).unwrap_or(Duration::from_secs(60));
        if too_short(value, idle) {
            plan.set(here.location.body(), block, name, "3600s");
        }
    }
}

/// The plan as line edits, indented like the block's own lines.
fn edits(text: &str, top: &[Directive], plan: &Plan) -> Vec<Edit> {
    let lines: Vec<&str> = text.lines().collect();
    let indent_of = |line: usize| -> String { lines.get(line.wrapping_sub(1)).map(|l| l[..l.len() - l.trim_start().len()].to_string()).unwrap_or_default() };
    let mut out = Vec::new();
    let mut blocks: BTreeSet<usize> = plan.adds.iter().map(|(b, _)| *b).collect();
    blocks.extend(plan.copy_inherited.iter().filter(|(_, l)| !l.is_empty()).map(|(b, _)| *b));
    for block in blocks {
        let mut new: Vec<String> = plan.copy_inherited.iter().filter(|(b, _)| *b == block).flat_map(|(_, l)| l.clone()).collect();
        new.extend(plan.adds.iter().filter(|(b, _)| *b == block).map(|(_, t)| t.clone()));
        // Inside a block: one level deeper than the block's line, as its first child is.
        let (anchor, indent) = if block == 0 {
            // NPM's Advanced text: after the header comments, at the text's own indent.
            let first = lines.iter().position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).unwrap_or(lines.len());
            (first, String::new())
        } else {
            let child = find_line(top, block).and_then(|d| d.block.as_ref()).and_then(|b| b.first()).map(|c| indent_of(c.line));
            let anchor = open_brace_line(&lines, block);
            (anchor, child.unwrap_or_else(|| format!("{}    ", indent_of(block))))
        };
        out.push(Edit::InsertAfter { line: anchor, lines: new.iter().map(|t| format!("{indent}{t}")).collect() });
    }
    for (line, t) in &plan.replaces {
        let lines = if t.is_empty() { Vec::new() } else { vec![format!("{}{t}", indent_of(*line))] };
        out.push(Edit::Replace { line: *line, lines });
    }
    if plan.switch_on {
        match switch_line(text) {
            Some(line) => out.push(Edit::Replace { line, lines: vec!["# websockets: on".into()] }),
            None => out.push(Edit::InsertAfter { line: 0, lines: vec!["# websockets: on".into()] }),
        }
    }
    out
}

fn find_line(body: &[Directive], line: usize) -> Option<&Directive> {
    all_directives(body).into_iter().find(|d| d.line == line && d.block.is_some())
}

/// The line of the `{` that opens the block whose directive starts at `line`.
fn open_brace_line(lines: &[&str], line: usize) -> usize {
    (line..=lines.len()).find(|n| lines[n - 1].contains('{')).unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::ConfigFile;

    fn situation(id: &str) -> (ConfigFile, String) {
        let path = crate::proxies::config::default_root().join(id);
        let config = ConfigFile::load(&path, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        (config, text)
    }

    fn context(kind: &str) -> Option<PathBuf> {
        let root = crate::proxies::config::default_root();
        Some(match kind {
            "npm" => root.join("npm/_context/nginx.conf"),
            _ => root.join("nginx/_context/debian.conf"),
        })
    }

    fn diagnose(id: &str, failed: &[&str]) -> Vec<Cause> {
        let (config, text) = situation(id);
        let s = Situation { context: context(config.kind.name()), ..Situation::alone(&config, &text) };
        super::super::causes(&s, failed)
    }

    fn corrected(id: &str, failed: &[&str]) -> (String, Correction) {
        let (config, text) = situation(id);
        let s = Situation { context: context(config.kind.name()), ..Situation::alone(&config, &text) };
        let c = super::super::correct(&s, failed).unwrap();
        (super::super::apply(&text, &c.edits), c)
    }

    #[test]
    fn the_tokenizer_keeps_lines_quotes_and_blocks() {
        let top = parse("server {\n  listen 80; # c\n  location = /x {\n    add_header A \"b c\";\n  }\n}\n").unwrap();
        let server = &top[0];
        assert_eq!(server.line, 1);
        let body = server.block.as_ref().unwrap();
        assert_eq!(body[0].args, vec!["80"]);
        assert_eq!(body[1].line, 3);
        assert_eq!(body[1].block.as_ref().unwrap()[0].args, vec!["A", "b c"]);
        assert!(parse("server { listen 80 }").unwrap_err().contains("line 1"));
        assert!(parse("server {\nlisten 80;\n").unwrap_err().contains("not closed"));
    }

    #[test]
    fn locations_are_picked_as_nginx_picks_them() {
        let top = parse("location / {} location /api {} location ~ ^/api/(event|x)$ {} location = /api/terminal/ws {} location ^~ /static {}").unwrap();
        let locs = locations_of(&top);
        assert_eq!(serving(&locs, "/api/terminal/ws").unwrap().pattern, "/api/terminal/ws");
        assert_eq!(serving(&locs, "/api/event").unwrap().modifier, "~");
        assert_eq!(serving(&locs, "/api/mock").unwrap().pattern, "/api");
        assert_eq!(serving(&locs, "/x").unwrap().pattern, "/");
    }

    #[test]
    fn times_and_sizes_read_as_nginx_reads_them() {
        assert_eq!(duration("3600s"), Some(Duration::from_secs(3600)));
        assert_eq!(duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(duration("75"), Some(Duration::from_secs(75)));
        assert_eq!(size("50M"), Some(50 << 20));
        assert_eq!(size("1024k"), Some(1 << 20));
    }

    /// OpenChamber's own nginx example fails auth.origin: the cause is each WebSocket
    /// location, whose own proxy_set_header lines drop the server's Host/X-Forwarded-*.
    #[test]
    fn the_openchamber_guide_auth_origin_cause_names_the_websocket_locations() {
        let causes = diagnose("nginx/openchamber-guide.conf", &["auth.origin"]);
        let lines: Vec<usize> = causes.iter().map(|c| c.line).collect();
        assert_eq!(lines, vec![25, 35, 45], "{causes:#?}");
        assert_eq!(causes[0].text, "location = /api/terminal/ws {");
        assert!(causes[0].why.contains("Host, X-Forwarded-Host, X-Forwarded-Proto from line(s) 17, 20, 21"), "{}", causes[0].why);
        assert!(causes[0].why.contains("from line 27"), "{}", causes[0].why);
    }

    #[test]
    fn the_openchamber_guide_fix_repeats_the_dropped_headers_in_each_websocket_location() {
        let (fixed, c) = corrected("nginx/openchamber-guide.conf", &["auth.origin"]);
        assert!(c.unfixed.is_empty());
        let top = parse(&fixed).unwrap();
        let server = top[0].block.as_ref().unwrap();
        for loc in locations_of(server).iter().filter(|l| l.modifier == "=") {
            let names: Vec<&str> = loc.body().iter().filter(|d| d.name == "proxy_set_header").map(|d| d.arg(0)).collect();
            for h in ["Host", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-IP", "X-Forwarded-For", "Upgrade", "Connection"] {
                assert!(names.contains(&h), "{h} in {names:?}");
            }
        }
        // Nothing else changed: only added lines.
        let diff = super::super::unified_diff(&std::fs::read_to_string(crate::proxies::config::default_root().join("nginx/openchamber-guide.conf")).unwrap(), &fixed, "a", "b");
        assert!(!diff.lines().any(|l| l.starts_with('-') && !l.starts_with("---")), "{diff}");
        assert!(diagnose_text("nginx", &fixed, &["auth.origin"]).is_empty());
    }

    fn diagnose_text(kind: &str, text: &str, failed: &[&str]) -> Vec<Cause> {
        let (_dir, config) = super::super::written(kind, "site.conf", &text);
        let s = Situation { context: context(kind), ..Situation::alone(&config, text) };
        super::super::causes(&s, failed)
    }

    #[test]
    fn first_try_causes_name_the_location_and_debian_gzip() {
        let causes = diagnose("nginx/first-try.conf", &["ws.upgrade", "sse.idle", "body.large", "compress.single"]);
        let find = |check: &str| causes.iter().find(|c| c.check == check).unwrap_or_else(|| panic!("{check}: {causes:#?}"));
        assert_eq!(find("ws.upgrade").text, "location / {");
        assert_eq!(find("sse.idle").line, 10);
        assert_eq!(find("body.large").text, "server {");
        let gzip = find("compress.single");
        assert!(gzip.file.ends_with("nginx/_context/debian.conf"));
        assert_eq!(gzip.text, "gzip on;");
    }

    #[test]
    fn npm_ws_off_cause_is_the_switch() {
        let causes = diagnose("npm/first-try-ws-off.conf", &["ws.upgrade"]);
        assert_eq!(causes.len(), 1, "{causes:#?}");
        assert_eq!(causes[0].text, "# websockets: off");
        assert!(causes[0].why.contains("Websockets Support"));
        let (fixed, c) = corrected("npm/first-try-ws-off.conf", &["ws.upgrade", "ws.terminal", "headers.forwarded"]);
        assert!(fixed.contains("# websockets: on"));
        assert_eq!(c.unfixed.len(), 1, "{:?}", c.unfixed);
        assert_eq!(c.unfixed[0].0, "headers.forwarded");
    }

    #[test]
    fn npm_server_level_upgrade_lines_never_reach_npms_location() {
        let text = "# websockets: off\nproxy_http_version 1.1;\nproxy_set_header Upgrade $http_upgrade;\nproxy_set_header Connection \"upgrade\";\n";
        let causes = diagnose_text("npm", text, &["ws.upgrade"]);
        assert_eq!(causes[0].line, 3, "{causes:#?}");
        assert!(causes[0].why.contains("never reaches NPM's own `location /`"));
    }

    #[test]
    fn npm_advanced_with_the_switch_on_names_and_removes_the_duplicate() {
        let (config, text) = situation("npm/openchamber-advanced.conf");
        let message = "nginx: [emerg] \"proxy_http_version\" directive is duplicate in /tmp/p/site.conf:30".to_string();
        let s = Situation { setup_error: Some(message), ..Situation::alone(&config, &text) };
        let causes = super::super::causes(&s, &[SETUP]);
        assert_eq!(causes.len(), 1, "{causes:#?}");
        assert_eq!(causes[0].text, "proxy_http_version 1.1;");
        let c = super::super::correct(&s, &[SETUP]).unwrap();
        let fixed = super::super::apply(&text, &c.edits);
        assert!(!fixed.lines().any(|l| l.starts_with("proxy_http_version")), "{fixed}");
    }

    #[test]
    fn npm_advanced_ws_off_auth_origin_is_the_inheritance() {
        let causes = diagnose("npm/openchamber-advanced-ws-off.conf", &["auth.origin"]);
        assert_eq!(causes.len(), 3, "{causes:#?}");
        assert!(causes.iter().all(|c| c.text.starts_with("location = /api/")));
    }

    #[test]
    fn first_try_fix_covers_every_route_check() {
        let failed = ["ws.upgrade", "ws.terminal", "ws.idle", "sse.stream", "sse.idle", "http.slow", "body.large", "body.streaming", "headers.forwarded", "auth.origin"];
        let (fixed, c) = corrected("nginx/first-try.conf", &failed);
        assert!(c.unfixed.is_empty(), "{:?}", c.unfixed);
        assert!(diagnose_text("nginx", &fixed, &failed).is_empty(), "{fixed}");
        parse(&fixed).unwrap();
    }

    #[test]
    fn a_prefix_stripping_proxy_pass_is_named() {
        let text = "server {\n listen 80;\n location /api/ {\n  proxy_pass http://127.0.0.1:3000/;\n }\n}\n";
        let causes = diagnose_text("nginx", text, &["headers.forwarded"]);
        assert!(causes.iter().any(|c| c.line == 4 && c.why.contains("URI part `/`")), "{causes:#?}");
    }

    #[test]
    fn gzip_types_with_event_stream_is_named() {
        let text = "server {\n listen 80;\n gzip on;\n gzip_types text/event-stream;\n location / {\n  proxy_pass http://127.0.0.1:3000;\n  proxy_buffering off;\n }\n}\n";
        let causes = diagnose_text("nginx", text, &["compress.sse"]);
        let lines: Vec<usize> = causes.iter().map(|c| c.line).collect();
        assert_eq!(lines, vec![3, 4], "{causes:#?}");
    }
}
