//! The backend profiles (`openchamber`, `bare`, `dorkos`) and the per-profile facts the other
//! modules ask about: default port, whether helper headers and heartbeats are sent, gzip, limits.

use std::fmt;
use std::str::FromStr;

/// Which backend the mock imitates, chosen at start.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The real OpenChamber server: helper headers on streams, heartbeats, gzip at 1024 bytes.
    Openchamber,
    /// OpenChamber's routes and payloads without any helper header, heartbeat or ping, so a
    /// proxy config is seen working (or not) on its own merit.
    Bare,
    /// The DorkOS server: its own SSE routes with `id:` lines, no compression, small limits.
    Dorkos,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Openchamber, Profile::Bare, Profile::Dorkos];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Openchamber => "openchamber",
            Profile::Bare => "bare",
            Profile::Dorkos => "dorkos",
        }
    }

    /// The port the real server listens on by default.
    pub fn default_port(self) -> u16 {
        match self {
            Profile::Openchamber | Profile::Bare => 3000,
            Profile::Dorkos => 4242,
        }
    }

    /// Stream helper headers (`Cache-Control`, `Connection`, `X-Accel-Buffering`), heartbeats
    /// and WebSocket pings: everything `bare` leaves out.
    pub fn helpers(self) -> bool {
        self != Profile::Bare
    }

    /// Express `compression` middleware: OpenChamber has it, DorkOS does not.
    pub fn gzip(self) -> bool {
        self != Profile::Dorkos
    }

    /// `X-Robots-Tag: noindex, nofollow` on every response (OpenChamber only).
    pub fn robots_tag(self) -> bool {
        self != Profile::Dorkos
    }

    /// Largest accepted JSON body (Express `json({limit})`: "50mb" vs "1mb", binary megabytes).
    pub fn json_limit(self) -> u64 {
        match self {
            Profile::Openchamber | Profile::Bare => 50 * 1024 * 1024,
            Profile::Dorkos => 1024 * 1024,
        }
    }

    /// Largest accepted `POST /api/fs/upload` body.
    pub fn upload_limit(self) -> u64 {
        match self {
            Profile::Openchamber | Profile::Bare => 100 * 1024 * 1024,
            Profile::Dorkos => 10 * 1024 * 1024,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown profile {s:?} (expected openchamber, bare or dorkos)"))
    }
}
