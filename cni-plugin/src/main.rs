fn main() {
    // The CNI commands land with the plugin issue; until then the binary only
    // identifies itself, the way CNI's VERSION probe expects a plugin to exist.
    eprintln!(
        "weft-cni {}: CNI commands are not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(1);
}
