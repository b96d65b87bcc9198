//! Which instruction set the kernels run on, decided once per process at run time (the binary is built
//! for the baseline x86-64, never `target-cpu=native`).
//!
//! Every kernel has a portable version, the reference the others are tested against; the AVX2 and
//! AVX-512 versions are the same loops or hand-written intrinsics compiled for those features. The
//! choice is the best set the CPU has, or the one named by `BERTH_ISA` (`portable`, `avx2`, `avx512`)
//! when the CPU has it, so that any path can be run on purpose (tests, benchmarks, bisecting a
//! difference).
//!
//! AMX is detected and its tile state requested from Linux (`arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`, which a process must do before its first tile instruction, or the instruction
//! faults) before the compute threads start. No kernel uses tiles yet: [`CpuInfo::amx`] reports what the
//! machine would allow.

/// A set of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// The sets this CPU can run, best first (the portable one always).
    pub fn available() -> Vec<Isa> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            let base = is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            if base && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                all.push(Isa::Avx512);
            }
            if base && is_x86_feature_detected!("avx2") {
                all.push(Isa::Avx2);
            }
        }
        all.push(Isa::Portable);
        all
    }

    fn parse(name: &str) -> Option<Isa> {
        Isa::available().into_iter().find(|i| i.name() == name)
    }
}

/// Whether this process may use AMX tiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmxState {
    /// The CPU (as this machine presents it) has no AMX tile unit.
    Absent,
    /// The CPU has AMX but the kernel refused the tile state (the error it gave).
    Refused(String),
    /// The kernel granted the tile state: tile instructions may run on this process's threads.
    Granted,
}

/// What the engine found out about the CPU at start.
#[derive(Clone, Debug)]
pub struct CpuInfo {
    /// The kernels in use.
    pub isa: Isa,
    /// Every set this CPU can run, best first.
    pub available: Vec<Isa>,
    /// Whether `BERTH_ISA` chose `isa` (`Some(name)`, also when it named a set this CPU lacks).
    pub forced: Option<String>,
    pub amx: AmxState,
    /// AVX-512 BF16 (`vdpbf16ps`).
    pub avx512_bf16: bool,
    /// AVX-512 VNNI (`vpdpbusd`).
    pub avx512_vnni: bool,
}

/// The CPU facts and the kernel choice, worked out on first use: the compute threads call it before
/// they start, so the AMX request comes before any thread could use tiles.
pub fn cpu() -> &'static CpuInfo {
    static CPU: std::sync::OnceLock<CpuInfo> = std::sync::OnceLock::new();
    CPU.get_or_init(|| {
        let available = Isa::available();
        let forced = std::env::var("BERTH_ISA").ok().filter(|v| !v.is_empty());
        let isa = match forced.as_deref().map(|name| (name, Isa::parse(name))) {
            Some((_, Some(isa))) => isa,
            Some((name, None)) => {
                tracing::warn!(
                    "BERTH_ISA={name} is not one this CPU can run ({}); using the best it has",
                    names(&available)
                );
                available[0]
            }
            None => available[0],
        };
        #[cfg(target_arch = "x86_64")]
        let (avx512_bf16, avx512_vnni) =
            (is_x86_feature_detected!("avx512bf16"), is_x86_feature_detected!("avx512vnni"));
        #[cfg(not(target_arch = "x86_64"))]
        let (avx512_bf16, avx512_vnni) = (false, false);
        let info = CpuInfo { isa, available, forced, amx: request_amx(), avx512_bf16, avx512_vnni };
        tracing::info!(
            kernels = info.isa.name(),
            available = names(&info.available),
            amx = ?info.amx,
            avx512_bf16,
            avx512_vnni,
            "CPU kernels chosen"
        );
        info
    })
}

/// The kernels in use (see [`cpu`]).
pub(crate) fn isa() -> Isa {
    cpu().isa
}

fn names(isas: &[Isa]) -> String {
    isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
}

/// Asks Linux for the AMX tile state when CPUID says the CPU has AMX-TILE.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[allow(unsafe_code)]
fn request_amx() -> AmxState {
    // CPUID leaf 7, sub-leaf 0: EDX bit 24 is AMX-TILE.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaf 7 exists on every x86-64 CPU that has AVX2 and is harmless on the others
    // (it returns zeros for a leaf above the maximum).
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    if leaf7.edx & (1 << 24) == 0 {
        return AmxState::Absent;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes a feature number and touches no memory.
    let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
    if rc == 0 {
        AmxState::Granted
    } else {
        AmxState::Refused(std::io::Error::last_os_error().to_string())
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_amx() -> AmxState {
    AmxState::Absent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_portable_set_is_always_available_and_last() {
        let all = Isa::available();
        assert_eq!(all.last(), Some(&Isa::Portable));
        assert_eq!(Isa::parse("portable"), Some(Isa::Portable));
        assert_eq!(Isa::parse("sse9"), None);
        assert!(all.contains(&cpu().isa));
    }

    #[test]
    fn amx_is_granted_only_where_the_cpu_has_it() {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let has_tile = flags.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "amx_tile"));
        match &cpu().amx {
            AmxState::Absent => assert!(!has_tile, "/proc/cpuinfo lists amx_tile, CPUID did not"),
            AmxState::Granted | AmxState::Refused(_) => assert!(has_tile || flags.is_empty()),
        }
    }
}
