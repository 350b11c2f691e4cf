//! A unit pair that fails over, under load: see `understudy::demo::pair_failover`.
//!
//! Run it with `cargo run --release --example pair_failover` (or `cargo run --release -- demo`).

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    understudy::demo::in_process::pair_failover().await
}
