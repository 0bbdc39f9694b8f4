//! A Compose service's backend in the container runtime: a config that names its backend by a
//! service name (`proxy_pass http://openchamber:3000`) finds it the way users' does, through
//! Docker's DNS on the proxy's network, in a container of its own. The container runs the
//! workspace's mock image (`proxy-suite/mock-server:<version>-<hash>`, built by
//! `scripts/images.sh` from this workspace) under the service's name as a network alias, with
//! the run's profile and instance id.
//!
//! The mock listens on every interface of its container and answers only the run's network
//! (`--allow-from <subnet>`): the proxy's container, and this machine through the network's
//! gateway, nobody else (it publishes no port). The run switches its UI password over the
//! mock's control route (`--control-token`), as it switches the in-process mocks.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use testcontainers::bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use testcontainers::bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use testcontainers::bollard::Docker;

use super::docker::{LocalImage, Subnet};
use super::Backend;
use crate::backend::RemoteMock;

/// How long the mock may take to answer after its container started (it serves within
/// milliseconds; the engine on a busy 2-core machine is the slow part).
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A mock serving a service name on a run's network.
#[derive(Debug, Clone)]
pub struct ServiceMock {
    /// The service name, its network alias.
    pub name: String,
    pub port: u16,
    pub container_id: String,
    /// Its address on the run's network (reachable from this machine through the gateway).
    pub ip: Ipv4Addr,
    pub instance: String,
    control_token: String,
}

impl ServiceMock {
    /// The run's handle on it: where its UI password is switched.
    pub fn remote(&self) -> RemoteMock {
        RemoteMock {
            label: format!("{} (service {}, container {})", self.instance, self.name, &self.container_id[..self.container_id.len().min(12)]),
            base: format!("http://{}:{}", self.ip, self.port),
            control_token: self.control_token.clone(),
        }
    }
}

/// A secret for the control route, from the TLS stack's random source.
fn control_token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider().secure_random.fill(&mut bytes).map_err(|_| "no random source for the mock's control token".to_string())?;
    Ok(hex::encode(bytes))
}

/// Starts `backend`'s twin as the service `(name, port)` on `network` (subnet `subnet`) and
/// waits until it answers. The container carries `labels` (the suite's clean-up finds it by
/// them).
pub async fn start(docker: &Docker, image: &LocalImage, network: &str, subnet: Subnet, (name, port): (&str, u16), backend: &Backend, labels: HashMap<String, String>) -> Result<ServiceMock, String> {
    let token = control_token()?;
    let cmd = vec![
        "--port".to_string(),
        port.to_string(),
        "--profile".into(),
        backend.profile.to_string(),
        "--instance-id".into(),
        backend.instance.clone(),
        "--allow-from".into(),
        format!("{}/{}", subnet.base, subnet.prefix),
        "--control-token".into(),
        token.clone(),
    ];
    let body = ContainerCreateBody {
        image: Some(image.tag.clone()),
        cmd: Some(cmd),
        labels: Some(labels),
        host_config: Some(HostConfig { network_mode: Some(network.to_string()), ..Default::default() }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network.to_string(), EndpointSettings { aliases: Some(vec![name.to_string()]), ..Default::default() })])),
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::new().build()), body)
        .await
        .map_err(|e| format!("cannot create the mock container for the service {name}: {e}"))?;
    let id = created.id;
    let fail = |docker: Docker, id: String, message: String| async move {
        let logs = super::docker::output_tail(&docker, &id, 20).await;
        remove(&docker, &id).await;
        Err(if logs.is_empty() { message } else { format!("{message}\n== mock container output ==\n{logs}") })
    };
    if let Err(e) = docker.start_container(&id, None::<testcontainers::bollard::query_parameters::StartContainerOptions>).await {
        return fail(docker.clone(), id, format!("cannot start the mock container for the service {name}: {e}")).await;
    }
    let ip = match docker.inspect_container(&id, None::<testcontainers::bollard::query_parameters::InspectContainerOptions>).await {
        Ok(inspect) => inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(network).and_then(|e| e.ip_address.clone()))
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok()),
        Err(_) => None,
    };
    let Some(ip) = ip else {
        return fail(docker.clone(), id, format!("the mock container for the service {name} has no address on {network}")).await;
    };
    let mock = ServiceMock { name: name.to_string(), port, container_id: id.clone(), ip, instance: backend.instance.clone(), control_token: token };
    let deadline = Instant::now() + READY_WITHIN;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| format!("no HTTP client: {e}"))?;
    loop {
        if answers(&client, SocketAddr::from((ip, port))).await {
            return Ok(mock);
        }
        if Instant::now() > deadline {
            return fail(docker.clone(), id, format!("the mock for the service {name} did not answer at {ip}:{port} within {} s", READY_WITHIN.as_secs())).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the mock at `addr` answers its health route.
async fn answers(client: &reqwest::Client, addr: SocketAddr) -> bool {
    client.get(format!("http://{addr}/health")).send().await.is_ok_and(|r| r.status().is_success())
}

/// Removes the container, best effort (it carries the suite's labels: the interrupt handler
/// and the next run's reaper take what is left).
pub async fn remove(docker: &Docker, id: &str) {
    let _ = docker.remove_container(id, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
}
