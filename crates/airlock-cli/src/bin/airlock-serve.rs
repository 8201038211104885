//! `airlock-serve`: the sandbox service, a program of its own (its HTTP,
//! async runtime and SQLite stay out of `airlock run`'s start-up); `airlock
//! serve` runs it.

fn main() {
    // `airlock mcp` runs `airlock-serve mcp ARGS`: the MCP server on stdio.
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("mcp") {
        std::process::exit(airlock_server::mcp::main_stdio(args.collect()));
    }
    airlock_server::main();
}
