//! The binary's command line: flags, defaults per profile, and the bind rule (a mock that echoes
//! and swallows uploads must not be an open relay on a public address).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Parser;

use crate::{MockConfig, Profile};

/// Mock OpenChamber / DorkOS backend for the reverse-proxy conformance suite.
///
/// Serves the real server's routes, headers, frames, heartbeats, gzip rules and body caps, plus
/// instruments under /api/mock/ (see mock-server/README.md for the wire contract).
#[derive(Debug, Clone, Parser)]
#[command(name = "mock-server", version)]
pub struct Cli {
    /// Port to listen on [default: 3000; 4242 for --profile dorkos]. 0 picks a free port.
    #[arg(long)]
    pub port: Option<u16>,

    /// Address to bind. Anything but a loopback address is refused unless --access-token or
    /// --allow-from is given.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,

    /// Which backend to imitate: openchamber (the real server), bare (same routes, no helper
    /// headers, heartbeats or pings), dorkos (DorkOS routes, no gzip, small body limits).
    #[arg(long, value_enum, default_value_t = Profile::Openchamber)]
    pub profile: Profile,

    /// Sent as X-Mock-Instance on every response [default: mock-<port>]. Printable ASCII only.
    #[arg(long, value_parser = parse_instance_id)]
    pub instance_id: Option<String>,

    /// Turn on UI-password mode: /api routes need the oc_ui_session cookie (POST /auth/session),
    /// a bearer token or ?oc_url_token=, and WebSocket upgrades a matching Origin.
    #[arg(long, value_parser = parse_secret)]
    pub ui_password: Option<String>,

    /// Require X-Mock-Access-Token (or ?mock_access_token=) on every request. With a
    /// non-loopback --bind, this or --allow-from is mandatory.
    #[arg(long, value_parser = parse_secret)]
    pub access_token: Option<String>,

    /// Answer only peers in this network (CIDR, e.g. 172.30.0.0/24; repeatable); others are
    /// closed unanswered. A non-loopback --bind limited to private networks needs no token.
    #[arg(long, value_name = "CIDR")]
    pub allow_from: Vec<ipnet::IpNet>,

    /// Enable `PUT /mock-control/ui-password` for requests carrying
    /// `X-Mock-Control-Token: T` (switches UI-password mode at run time; empty body: off).
    #[arg(long, value_parser = parse_secret)]
    pub control_token: Option<String>,
}

impl Cli {
    /// The address to bind, after the bind rule.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        check_bind(self.bind, self.access_token.as_deref(), &self.allow_from)?;
        let port = self.port.unwrap_or(self.profile.default_port());
        Ok(SocketAddr::new(self.bind, port))
    }

    /// The configuration once the real port is known (it names the default instance id).
    pub fn config(&self, port: u16) -> MockConfig {
        MockConfig {
            profile: self.profile,
            instance_id: self
                .instance_id
                .clone()
                .unwrap_or_else(|| format!("mock-{port}")),
            ui_password: self.ui_password.clone(),
            access_token: self.access_token.clone(),
            allow_from: self.allow_from.clone(),
            control_token: self.control_token.clone(),
        }
    }
}

/// What `--allow-from` may name: loopback, RFC 1918 and unique-local networks, or parts of them.
const PRIVATE_NETWORKS: [&str; 5] = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

/// Loopback binds are always allowed; any other address needs an access token, or peers
/// limited to private networks (loopback, RFC 1918, unique-local: never the internet).
pub fn check_bind(bind: IpAddr, access_token: Option<&str>, allow_from: &[ipnet::IpNet]) -> Result<(), String> {
    // The whole network must lie inside one of these (192.168.0.0/15 is not private: half of it
    // is 192.169/16).
    let private = |net: &ipnet::IpNet| PRIVATE_NETWORKS.iter().any(|p| p.parse::<ipnet::IpNet>().is_ok_and(|p| p.contains(net)));
    if let Some(public) = allow_from.iter().find(|n| !private(n)) {
        return Err(format!(
            "refusing --allow-from {public}: only loopback and private networks (10/8, 172.16/12, \
             192.168/16, fc00::/7) may be allowed"
        ));
    }
    if bind.is_loopback() || access_token.is_some_and(|t| !t.is_empty()) || !allow_from.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "refusing to bind {bind} without --access-token or --allow-from: the mock echoes \
             requests and swallows uploads, and must not be an open relay on a non-loopback address"
        ))
    }
}

fn parse_instance_id(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic()) {
        Ok(s.to_owned())
    } else {
        Err("must be non-empty printable ASCII without spaces (it is sent as a header)".to_owned())
    }
}

fn parse_secret(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}
