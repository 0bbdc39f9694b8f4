//! The command line (defaults, the non-loopback bind rule, `--help`) and the in-process server's
//! life: graceful shutdown ends open streams and sockets, dropping the handle stops everything.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use common::*;
use mock_server::cli::{check_bind, Cli};
use mock_server::Profile;
use rstest::rstest;
use tokio_tungstenite::tungstenite::Message;

#[rstest]
#[case("127.0.0.1", None, true)]
#[case("::1", None, true)]
#[case("127.0.0.2", None, true)]
#[case("0.0.0.0", None, false)]
#[case("::", None, false)]
#[case("192.168.1.10", None, false)]
#[case("0.0.0.0", Some(""), false)]
#[case("0.0.0.0", Some("tok"), true)]
fn bind_rule(#[case] ip: &str, #[case] token: Option<&str>, #[case] allowed: bool) {
    let ip: IpAddr = ip.parse().unwrap();
    assert_eq!(check_bind(ip, token, &[]).is_ok(), allowed, "{ip} {token:?}");
}

/// `--allow-from` opens a non-loopback bind to private networks only (a Docker network's
/// subnet), never to the internet.
#[rstest]
#[case("172.30.0.0/24", true)]
#[case("10.213.0.0/16", true)]
#[case("192.168.0.0/16", true)]
#[case("127.0.0.0/8", true)]
#[case("fd00::/8", true)]
#[case("0.0.0.0/0", false)]
#[case("8.8.8.0/24", false)]
#[case("10.0.0.0/7", false)]
#[case("192.168.0.0/15", false)]
#[case("172.16.0.0/11", false)]
#[case("fc00::/6", false)]
#[case("::/0", false)]
fn allow_from_rule(#[case] net: &str, #[case] allowed: bool) {
    let nets = [net.parse().unwrap()];
    let result = check_bind("0.0.0.0".parse().unwrap(), None, &nets);
    assert_eq!(result.is_ok(), allowed, "{net}: {result:?}");
    if !allowed {
        assert!(result.unwrap_err().contains("private networks"), "{net}");
    }
}

#[rstest]
#[case(&[], Profile::Openchamber, "127.0.0.1:3000")]
#[case(&["--profile", "bare"], Profile::Bare, "127.0.0.1:3000")]
#[case(&["--profile", "dorkos"], Profile::Dorkos, "127.0.0.1:4242")]
#[case(&["--profile", "dorkos", "--port", "9"], Profile::Dorkos, "127.0.0.1:9")]
#[case(&["--bind", "0.0.0.0", "--access-token", "t", "--port", "0"], Profile::Openchamber, "0.0.0.0:0")]
fn cli_defaults(#[case] args: &[&str], #[case] profile: Profile, #[case] addr: &str) {
    let cli =
        Cli::try_parse_from(std::iter::once("mock-server").chain(args.iter().copied())).unwrap();
    assert_eq!(cli.profile, profile);
    assert_eq!(cli.listen_addr().unwrap().to_string(), addr);
    let config = cli.config(1234);
    assert_eq!(config.instance_id, "mock-1234");
    assert_eq!(config.profile, profile);
}

#[test]
fn cli_refuses_public_bind_without_token_and_bad_values() {
    let cli = Cli::try_parse_from(["mock-server", "--bind", "0.0.0.0"]).unwrap();
    assert!(cli.listen_addr().unwrap_err().contains("--access-token"));
    for bad in [
        &["mock-server", "--profile", "nginx"][..],
        &["mock-server", "--port", "70000"],
        &["mock-server", "--instance-id", "has space"],
        &["mock-server", "--ui-password", ""],
        &["mock-server", "--bind", "localhost-ish"],
    ] {
        assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
    }
    let cli =
        Cli::try_parse_from(["mock-server", "--instance-id", "a1", "--ui-password", "pw"]).unwrap();
    let config = cli.config(3000);
    assert_eq!(config.instance_id, "a1");
    assert_eq!(config.ui_password.as_deref(), Some("pw"));
}

#[test]
fn help_documents_every_flag() {
    let mut cmd = Cli::command();
    let help = cmd.render_long_help().to_string();
    for flag in [
        "--port",
        "--bind",
        "--profile",
        "--instance-id",
        "--ui-password",
        "--access-token",
        "--allow-from",
        "--control-token",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    for arg in cmd.get_arguments() {
        assert!(
            arg.get_help().is_some() || arg.get_long_help().is_some(),
            "{} undocumented",
            arg.get_id()
        );
    }
}

#[test]
fn profile_names_round_trip() {
    for p in Profile::ALL {
        assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
        assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
    }
    assert!("nginx".parse::<Profile>().is_err());
}

#[tokio::test]
async fn shutdown_ends_streams_and_sockets() {
    let mock = mock(Profile::Openchamber).await;
    let (_, mut frames) = sse(&mock, "/api/event").await;
    frames.next().await.unwrap();
    let mut ws = ws_connect(&ws_url(&mock, "/api/event/ws"), &[])
        .await
        .unwrap();
    ws_next_json(&mut ws).await;
    let addr = mock.addr();
    tokio::time::timeout(PATIENCE, mock.shutdown())
        .await
        .expect("shutdown completes");
    assert!(frames.next().await.is_none(), "SSE stream still open");
    match ws_next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn drop_stops_the_server() {
    let mock = mock(Profile::Bare).await;
    let (_, mut frames) = sse(&mock, "/api/event").await;
    frames.next().await.unwrap();
    let addr = mock.addr();
    drop(mock);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
    assert!(frames.ends().await, "stream outlived the mock");
}

#[tokio::test]
async fn app_router_serves_without_spawn() {
    // The suite may serve `app()` itself; it must work without ConnectInfo.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            mock_server::app(mock_server::MockConfig::new(Profile::Openchamber)),
        )
        .await
        .unwrap()
    });
    let report: serde_json::Value = client()
        .get(format!("http://{addr}/api/mock/request"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(report["peer"].is_null());
    server.abort();
}

/// `allow_from`: a peer outside the listed networks gets its connection closed unanswered; a
/// peer inside is served.
#[tokio::test]
async fn peers_outside_allow_from_are_closed_unanswered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = mock_server::MockConfig::new(Profile::Openchamber);
    config.allow_from = vec!["127.0.0.2/32".parse().unwrap()];
    let mock = mock_with(config).await;
    let addr = mock.addr();
    let ask = |from: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((std::net::Ipv4Addr::from(from), 0).into()).unwrap();
        let mut tcp = socket.connect(addr).await.unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await.expect("answer or close");
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert_eq!(ask([127, 0, 0, 1]).await, "", "a peer outside --allow-from was answered");
    assert!(ask([127, 0, 0, 2]).await.starts_with("HTTP/1.1 200"), "a peer inside --allow-from was refused");
}

/// `control_token`: `PUT /mock-control/ui-password` switches UI-password mode at run time (the
/// suite's switch for a mock in a container); a wrong token is 403, and without a control
/// token the route does not exist.
#[tokio::test]
async fn the_control_route_switches_the_ui_password() {
    let mut config = mock_server::MockConfig::new(Profile::Openchamber);
    config.control_token = Some("ctl".into());
    let mock = mock_with(config).await;
    let put = |token: &'static str, body: &'static str| {
        client()
            .put(mock.url("/mock-control/ui-password"))
            .header("x-mock-control-token", token)
            .body(body)
            .send()
    };
    let status = || async { client().get(mock.url("/api/mock/request")).send().await.unwrap().status().as_u16() };
    assert_eq!(status().await, 200);
    assert_eq!(put("wrong", "pw").await.unwrap().status().as_u16(), 403);
    assert_eq!(status().await, 200, "a wrong token switched the mode");
    assert_eq!(put("ctl", "pw").await.unwrap().status().as_u16(), 204);
    assert_eq!(status().await, 401, "UI-password mode is on");
    assert_eq!(put("ctl", "").await.unwrap().status().as_u16(), 204);
    assert_eq!(status().await, 200, "UI-password mode is off again");
    let plain = mock_with(mock_server::MockConfig::new(Profile::Openchamber)).await;
    let res = client().put(plain.url("/mock-control/ui-password")).header("x-mock-control-token", "ctl").body("pw").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 404);
}
