//! Each check fails (or warns, where the catalogue says so) through the faulty proxy built to
//! break it: the proof that the checks can fail. The cases and their grades are the table
//! `FAULT_CASES` in `support/mod.rs`; this file runs each as its own test.

mod support;

use support::{run_fault_case, FAULT_CASES};

/// One test per named case of `FAULT_CASES`, and the list of the names, so that a case added
/// to the table without a test here (never run, yet counted as a proof) fails
/// `every_fault_case_is_run`.
macro_rules! fault_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_fault_case(stringify!($name)).await;
            }
        )*
        const RUN: &[&str] = &[$(stringify!($name)),*];
    };
}

fault_cases!(
    buffered_sse,
    buffered_sse_dorkos,
    batched_sse,
    sse_as_text,
    no_transform_dropped,
    stripped_upgrade,
    idle_cut,
    idle_cut_dorkos,
    double_gzip,
    flushed_sse_gzip,
    wrong_content_encoding,
    dropped_forwarded,
    proxy_address_forwarded,
    overwritten_origin,
    body_cap,
    body_cap_dorkos,
    round_robin,
    first_only,
    h2_connection_header,
    h2_idle_reset,
    redirect_301,
    redirect_308,
    extended_connect_refused,
    extended_connect_not_advertised,
    browser_buffered_sse,
    browser_stripped_upgrade,
    browser_body_cap,
    browser_lost_resume,
    browser_idle_cut_resumes,
);

#[test]
fn every_fault_case_is_run() {
    let mut table: Vec<&str> = FAULT_CASES.iter().map(|c| c.name).collect();
    let mut run = RUN.to_vec();
    table.sort_unstable();
    run.sort_unstable();
    assert_eq!(
        run, table,
        "the tests of checks_fail.rs and the cases of FAULT_CASES differ"
    );
}
