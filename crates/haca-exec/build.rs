//! Records the x86 extensions llama.cpp is compiled to use, as `HACA_LLAMA_ISA`, so that the
//! local LLM engine refuses to start on a CPU without them instead of dying on an illegal
//! instruction. With the native launcher (the `sh -c` line in .cargo/config.toml) that is
//! everything the build machine has; otherwise the x86-64-v3 baseline of the `GGML_*` flags.

include!("src/llm/x86_features.rs");

fn main() {
    for var in [
        "CMAKE_CXX_COMPILER_LAUNCHER",
        "HACA_LLAMA_PORTABLE",
        "GGML_AVX",
        "GGML_AVX2",
        "GGML_FMA",
        "GGML_F16C",
        "GGML_BMI2",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let native = env("CMAKE_CXX_COMPILER_LAUNCHER").ends_with("native-cc")
        && env("HACA_LLAMA_PORTABLE") != "1"
        && env("HOST") == env("TARGET");
    let x86 = matches!(env("CARGO_CFG_TARGET_ARCH").as_str(), "x86" | "x86_64");
    let isa: Vec<&str> = if !x86 {
        Vec::new()
    } else if native {
        x86_features()
    } else {
        [
            ("GGML_AVX", "avx"),
            ("GGML_AVX2", "avx2"),
            ("GGML_FMA", "fma"),
            ("GGML_F16C", "f16c"),
            ("GGML_BMI2", "bmi2"),
        ]
        .into_iter()
        .filter(|(k, _)| env(k).eq_ignore_ascii_case("on"))
        .map(|(_, f)| f)
        .collect()
    };
    println!("cargo:rustc-env=HACA_LLAMA_ISA={}", isa.join(","));
}
