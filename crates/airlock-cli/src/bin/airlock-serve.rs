//! `airlock-serve`: the sandbox service, a program of its own (its HTTP,
//! async runtime and SQLite stay out of `airlock run`'s start-up); `airlock
//! serve` runs it.

fn main() {
    airlock_server::main();
}
