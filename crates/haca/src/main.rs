fn main() -> std::process::ExitCode {
    haca::cli::main()
}
