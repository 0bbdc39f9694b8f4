//! `lb.sticky`: with several backends behind one proxy (the WebSocket how-to's `ip_hash`
//! upstream), every request and upgrade of one client lands on one instance, seen through the
//! mock's `X-Mock-Instance` header and its request reports; and the clients, from addresses in
//! different /24s, spread over more than one instance (a proxy that sends everything to one
//! backend is trivially "sticky" and balances nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mock_server::Profile;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::client::{
    body_bytes, get, header, http_client, secs, text_json, within, ws_close, ws_connect, ws_next,
    EXCHANGE_TIMEOUT,
};
use super::{CheckInfo, Grade, Outcome, Target};

/// Failure sign when every client lands on one and the same instance.
pub const ONE_INSTANCE_SIGN: &str = "Only one backend ever serves: the others stand idle, and when that one goes down every session goes with it";
pub const ONE_INSTANCE_FIX: &str = "upstream backend { ip_hash; server 127.0.0.1:3000; server 127.0.0.1:3001; ... } with every instance a server of its own (none marked backup or down)";

pub const LB_STICKY: CheckInfo = CheckInfo {
    id: "lb.sticky",
    requirement: "If you run multiple backend instances, use ip_hash so a client always connects to the same upstream server (sticky sessions)",
    sign: "A client's requests and WebSockets land on different backends: sessions and live state seem to vanish between requests",
    fix: "upstream backend { ip_hash; server 127.0.0.1:3000; server 127.0.0.1:3001; ... }",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

/// Clients, one per /24 of 127.0.0.0/8 (nginx's `ip_hash` keys on the first three octets, so
/// 127.0.0.2 and 127.0.0.3 would count as one client). With three backends, nginx's hash puts
/// 127.0.1.x, 127.0.2.x and 127.0.3.x on three different servers; six clients leave a hash of
/// any other proxy over two backends a 1 in 32 chance of putting them all on one.
const CLIENTS: u8 = 6;
/// Plain requests and upgrades per client, each on its own connection, one after another (the
/// clients too): a round-robin proxy cannot put eight of them on one instance.
const REQUESTS: usize = 6;
const UPGRADES: usize = 2;
/// The whole check takes about a second; a proxy that lets every connection hang would take
/// 48 exchange timeouts, so no new connection is opened after this.
const BUDGET: Duration = Duration::from_secs(60);

/// The address of client `n` (from 1): `127.0.n.2`.
fn client_address(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, n, 2))
}

/// Where one request landed.
struct Landing {
    client: IpAddr,
    what: String,
    upgrade: bool,
    instance: Result<String, String>,
}

async fn land_http(target: &Target) -> Result<String, String> {
    let client = http_client(target);
    let response = within(
        EXCHANGE_TIMEOUT,
        "request",
        get(&client, target, "/api/mock/request").send(),
    )
    .await?;
    let from_header = header(response.headers(), "x-mock-instance");
    let status = response.status();
    let body = body_bytes(response, EXCHANGE_TIMEOUT).await?;
    let from_report = serde_json::from_slice::<Value>(&body).ok().and_then(|r| {
        r.get("instance")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    from_report
        .or(from_header)
        .ok_or_else(|| "no instance in the report or headers".to_string())
}

async fn land_ws(target: &Target, path: &str) -> Result<String, String> {
    let (mut ws, up) = ws_connect(target, path, &[])
        .await
        .map_err(|r| r.to_string())?;
    let from_header = header(&up.headers, "x-mock-instance");
    let from_report = if path.starts_with("/api/mock/request/ws") {
        ws_next(&mut ws, Instant::now() + EXCHANGE_TIMEOUT)
            .await
            .ok()
            .and_then(|m| text_json(&m))
            .and_then(|r| {
                r.get("instance")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
    } else {
        None
    };
    ws_close(ws).await;
    from_report
        .or(from_header)
        .ok_or_else(|| "no instance in the report or the 101's headers".to_string())
}

/// Every request and upgrade of one client, one after another, none opened past `deadline`.
async fn land_client(
    target: &Target,
    upgrades: usize,
    deadline: Instant,
    landings: &mut Vec<Landing>,
) {
    let client = target.client_ip;
    let out_of_time = || {
        Err(format!(
            "not sent: the check's {} budget ran out",
            secs(BUDGET)
        ))
    };
    for i in 0..REQUESTS.max(upgrades) {
        if i < REQUESTS {
            landings.push(Landing {
                client,
                what: format!("request {}", i + 1),
                upgrade: false,
                instance: if Instant::now() < deadline {
                    land_http(target).await
                } else {
                    out_of_time()
                },
            });
        }
        if i < upgrades {
            let path = if i % 2 == 0 {
                "/api/event/ws?mock_silent=1"
            } else {
                "/api/mock/request/ws"
            };
            landings.push(Landing {
                client,
                what: format!("upgrade {}", path.split('?').next().unwrap_or(path)),
                upgrade: true,
                instance: if Instant::now() < deadline {
                    land_ws(target, path).await
                } else {
                    out_of_time()
                },
            });
        }
    }
}

pub async fn sticky(target: &Target) -> Outcome {
    let info = &LB_STICKY;
    if target.backends.len() < 2 {
        return info.skip("a single backend behind this config: nothing to balance");
    }
    if !target.addr.is_ipv4() {
        return info
            .skip("the proxy listens on IPv6: the clients' /24s of 127.0.0.0/8 cannot reach it");
    }
    let clients: Vec<IpAddr> = (1..=CLIENTS).map(client_address).collect();
    // Linux answers on all of 127.0.0.0/8; a machine that does not cannot run this check.
    if let Some((ip, e)) = clients
        .iter()
        .find_map(|ip| std::net::UdpSocket::bind((*ip, 0)).err().map(|e| (ip, e)))
    {
        return info.outcome(
            Grade::Error,
            "the client addresses of 127.0.0.0/8 can be bound",
            format!("cannot bind the client address {ip}: {e}"),
            Value::Null,
        );
    }
    let upgrades = if target.profile == Profile::Dorkos {
        0
    } else {
        UPGRADES
    };
    let mut landings = Vec::new();
    let deadline = Instant::now() + BUDGET;
    for ip in &clients {
        let mut from = target.clone();
        from.client_ip = *ip;
        land_client(&from, upgrades, deadline, &mut landings).await;
    }

    // Per client: the instances it landed on, with counts.
    let mut per_client: BTreeMap<IpAddr, BTreeMap<String, usize>> = BTreeMap::new();
    for l in &landings {
        let entry = per_client.entry(l.client).or_default();
        if let Ok(i) = &l.instance {
            *entry.entry(i.clone()).or_default() += 1;
        }
    }
    let served: BTreeSet<&String> = per_client.values().flat_map(|c| c.keys()).collect();
    let describe = |counts: &BTreeMap<String, usize>| {
        counts
            .iter()
            .map(|(i, n)| format!("{i} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unsticky: Vec<String> = per_client
        .iter()
        .filter(|(_, counts)| counts.len() > 1)
        .map(|(ip, counts)| format!("client {ip} spread over {}", describe(counts)))
        .collect();
    let failed: Vec<&Landing> = landings.iter().filter(|l| l.instance.is_err()).collect();
    let failed_upgrades = failed.iter().filter(|l| l.upgrade).count();
    let failed_requests = failed.len() - failed_upgrades;

    let mut problems = unsticky;
    if !failed.is_empty() {
        problems.push(format!(
            "{failed_requests} of {} requests and {failed_upgrades} of {} upgrades not observed ({})",
            clients.len() * REQUESTS,
            clients.len() * upgrades,
            failed
                .iter()
                .take(4)
                .map(|l| format!(
                    "{} from {}: {}",
                    l.what,
                    l.client,
                    l.instance.as_ref().err().map(String::as_str).unwrap_or("")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let one_instance = problems.is_empty() && served.len() == 1;
    if one_instance {
        let only = served.iter().next().map(|s| s.as_str()).unwrap_or("");
        let idle: Vec<&str> = target
            .backends
            .iter()
            .map(String::as_str)
            .filter(|b| *b != only)
            .collect();
        problems.push(format!(
            "only one instance ever served: all {} clients landed on {only}; {} got nothing",
            clients.len(),
            idle.join(", ")
        ));
    }

    let expected = format!(
        "{} clients from {} .. {} (one per /24), each sending {REQUESTS} requests and {upgrades} upgrades on connections of their own: every request and upgrade of a client lands on one instance, and the clients spread over more than one of the {} backends",
        clients.len(),
        clients[0],
        clients[clients.len() - 1],
        target.backends.len()
    );
    let m = json!({
        "backends": target.backends,
        "clients": per_client.iter().map(|(ip, counts)| json!({"client": ip.to_string(), "counts": counts})).collect::<Vec<_>>(),
        "instances_served": served,
        "failed_requests": failed_requests,
        "failed_upgrades": failed_upgrades,
        "landings": landings.iter().map(|l| json!({"client": l.client.to_string(), "what": l.what, "instance": l.instance.as_ref().ok(), "error": l.instance.as_ref().err()})).collect::<Vec<_>>(),
    });
    let pass = format!(
        "each of the {} clients stayed on one instance, and they spread over {} of {} instances ({})",
        clients.len(),
        served.len(),
        target.backends.len(),
        per_client
            .iter()
            .map(|(ip, counts)| format!("{ip} → {}", counts.keys().next().map(String::as_str).unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut outcome = info.pass_unless(&problems, expected, pass, m);
    if one_instance {
        outcome.sign = ONE_INSTANCE_SIGN.to_string();
        outcome.fix = ONE_INSTANCE_FIX.to_string();
    }
    outcome
}
