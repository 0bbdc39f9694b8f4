mod support;
use mock_server::Profile;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbg() {
    let m = support::mock(Profile::Openchamber, "mock-a").await;
    let o = suite::checks::run(&std::env::var("CHECK").unwrap(), &support::direct(&m, Profile::Openchamber)).await;
    println!("{}", serde_json::to_string_pretty(&o).unwrap());
}
