//! The mock backend instances a run puts behind a proxy, served in-process on loopback. Each
//! instance has its own id (`mock-1`, `mock-2`, ...) so load-balanced configs can be told apart.
//! A runtime may run the same instance elsewhere too (the container runtime runs a Compose
//! service's mock in a container): it hands it back as a [`RemoteMock`], switched with the rest.

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

    /// What a runtime is told of them.
    pub fn described(&self) -> Vec<crate::runtimes::Backend> {
        self.mocks.iter().map(|m| crate::runtimes::Backend { addr: m.addr(), instance: m.instance_id().to_string(), profile: m.profile() }).collect()
    }

    pub fn instance_ids(&self) -> Vec<String> {
        self.mocks.iter().map(|m| m.instance_id().to_string()).collect()
    }

    /// Turns the UI password on or off in every instance, here and in `remote` (only
    /// `auth.origin` runs with it on). A remote one that cannot be switched is an error naming it.
    pub async fn set_ui_password(&self, password: Option<&str>, remote: &[RemoteMock]) -> Result<(), String> {
        for m in &self.mocks {
            m.set_ui_password(password.map(String::from));
        }
        for r in remote {
            r.set_ui_password(password).await?;
        }
        Ok(())
    }

    pub async fn shutdown(self) {
        for m in self.mocks {
            m.shutdown().await;
        }
    }
}

/// A mock instance a runtime runs outside this process (a Compose service's mock in a
/// container), switched over its control route (`mock-server --control-token`).
#[derive(Debug, Clone)]
pub struct RemoteMock {
    /// What it is, for messages: `mock-1 in container 3f2a...`.
    pub label: String,
    /// `http://10.213.0.2:3000`: where this machine reaches it.
    pub base: String,
    pub control_token: String,
}

impl RemoteMock {
    /// `PUT /mock-control/ui-password` (an empty body turns it off).
    pub async fn set_ui_password(&self, password: Option<&str>) -> Result<(), String> {
        let url = format!("{}{}", self.base, mock_server::CONTROL_UI_PASSWORD);
        let res = reqwest::Client::new()
            .put(&url)
            .header("x-mock-control-token", &self.control_token)
            .body(password.unwrap_or("").to_string())
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("cannot switch the UI password of {} at {url}: {e}", self.label))?;
        if res.status().as_u16() == 204 {
            Ok(())
        } else {
            Err(format!("cannot switch the UI password of {} at {url}: {}", self.label, res.status()))
        }
    }
}
