//! The mock backend instances a run puts behind a proxy, served in-process on loopback. Each
//! instance has its own id (`mock-1`, `mock-2`, ...) so load-balanced configs can be told apart.

use std::net::SocketAddr;

use mock_server::{MockConfig, Profile, RunningMock};

/// The backends behind one proxy instance.
pub struct Backends {
    pub profile: Profile,
    mocks: Vec<RunningMock>,
}

impl Backends {
    /// Starts `count` mock instances of `profile` on free loopback ports.
    pub async fn start(profile: Profile, count: usize) -> std::io::Result<Backends> {
        let mut mocks = Vec::with_capacity(count);
        for i in 1..=count.max(1) {
            let mut config = MockConfig::new(profile);
            config.instance_id = format!("mock-{i}");
            mocks.push(mock_server::spawn(config, SocketAddr::from(([127, 0, 0, 1], 0))).await?);
        }
        Ok(Backends { profile, mocks })
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.mocks.iter().map(|m| m.addr()).collect()
    }

    pub fn instance_ids(&self) -> Vec<String> {
        self.mocks.iter().map(|m| m.instance_id().to_string()).collect()
    }

    /// Turns the UI password on or off in every instance (only `auth.origin` runs with it on).
    pub fn set_ui_password(&self, password: Option<&str>) {
        for m in &self.mocks {
            m.set_ui_password(password.map(String::from));
        }
    }

    pub async fn shutdown(self) {
        for m in self.mocks {
            m.shutdown().await;
        }
    }
}
