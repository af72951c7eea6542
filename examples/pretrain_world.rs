//! Builds an embedded world with the config given as JSON on the command line (experiments).
use gram_bench::world::{ensure_world, WorldConfig};
fn main() {
    let cfg: WorldConfig = serde_json::from_str(&std::env::args().nth(1).expect("config json")).unwrap();
    let cache = std::path::PathBuf::from(std::env::args().nth(2).expect("cache dir"));
    let a = ensure_world(&cache, &cfg, &mut |s| println!("{s}")).unwrap();
    println!("{}", serde_json::to_string_pretty(&a.manifest.pretrain).unwrap());
}
