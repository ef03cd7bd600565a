// Included by build.rs (run on the build machine) and by `llm::local` (run where the binary
// runs): the x86 extensions a compiler may use under `-march=native` that std can detect.

/// The extensions of this machine's CPU, by their `is_x86_feature_detected!` names.
#[allow(dead_code)]
fn x86_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        macro_rules! detect {
            ($($name:tt),*) => {
                $(if std::is_x86_feature_detected!($name) { found.push($name); })*
            };
        }
        detect!(
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "sse4a",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "bmi1",
            "bmi2",
            "lzcnt",
            "movbe",
            "adx",
            "aes",
            "pclmulqdq",
            "sha",
            "gfni",
            "vaes",
            "vpclmulqdq",
            "avxvnni",
            "avx512f",
            "avx512cd",
            "avx512bw",
            "avx512dq",
            "avx512vl",
            "avx512ifma",
            "avx512vbmi",
            "avx512vbmi2",
            "avx512vnni",
            "avx512bitalg",
            "avx512vpopcntdq",
            "avx512bf16",
            "avx512fp16",
            "avxvnniint8",
            "avxifma",
            "avxneconvert",
            "avxvnniint16",
            "sha512",
            "sm3",
            "sm4"
        );
    }
    found
}
