//! `--device`: which Burn backend and device a command runs on.
//!
//! The library crates are generic over `B: Backend`; this leaf is where a backend is chosen, at
//! run time, among those compiled in:
//!
//! | `--device` | backend | feature of `xtask` |
//! |---|---|---|
//! | `cpu` (default) | Flex, multi-threaded | always |
//! | `cuda`, `cuda:N` | CUDA (fusion, autotune) | `cuda` |
//! | `wgpu` | wgpu with the platform's default graphics API | `wgpu` |
//! | `vulkan` | wgpu forced onto Vulkan | `wgpu` (`vulkan` adds the SPIR-V compiler) |
//! | `metal` | wgpu forced onto Metal (macOS) | `wgpu` (`metal` adds the MSL compiler) |
//! | `tch` | LibTorch on the CPU (PyTorch's kernels: MKL/oneDNN GEMM) | `tch` (see `scripts/libtorch.sh`) |
//!
//! A command generic over the backend implements [`OnBackend`]; [`dispatch`] checks that the
//! device's backend is compiled in and that the device answers (a three-element sum), and runs
//! the command on it. `RAG_DEVICE` sets the default.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::Mutex;

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// Burn's Flex CPU backend.
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
    /// wgpu with the platform's default graphics API.
    Wgpu,
    /// wgpu on Vulkan.
    Vulkan,
    /// wgpu on Metal.
    Metal,
    /// LibTorch (PyTorch's C++ library) on the CPU.
    Tch,
}

impl DeviceSpec {
    /// The cargo feature of `xtask` that compiles this device's backend in, `None` for the CPU.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(_) => Some("cuda"),
            DeviceSpec::Wgpu | DeviceSpec::Vulkan | DeviceSpec::Metal => Some("wgpu"),
            DeviceSpec::Tch => Some("tch"),
        }
    }

    /// Whether this binary has the device's backend.
    pub fn compiled(self) -> bool {
        match self.feature() {
            None => true,
            Some("cuda") => cfg!(feature = "cuda"),
            Some("tch") => cfg!(feature = "tch"),
            Some(_) => cfg!(feature = "wgpu"),
        }
    }

    /// Whether f64 may be asked of this device: the CPU backends, Flex and LibTorch (wgpu reports
    /// f64 but returned NaN on lavapipe, BURN_0_21 trap 19; CUDA's f64 is untested here).
    pub fn allows_f64(self) -> bool {
        matches!(self, DeviceSpec::Cpu | DeviceSpec::Tch)
    }
}

/// Refuses a half-precision compute dtype the backend does not have on this device.
pub fn check_precision<B: Backend>(device: &B::Device, spec: DeviceSpec, precision: rag::Precision) -> Result<()> {
    if let Some(dtype) = precision.half_dtype()
        && !B::supports_dtype(device, dtype)
    {
        bail!("--precision {precision:?}: the {} backend has no {dtype:?} on --device {spec}", B::name(device));
    }
    Ok(())
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Wgpu => write!(f, "wgpu"),
            DeviceSpec::Vulkan => write!(f, "vulkan"),
            DeviceSpec::Metal => write!(f, "metal"),
            DeviceSpec::Tch => write!(f, "tch"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        Ok(match s.as_str() {
            "cpu" => DeviceSpec::Cpu,
            "cuda" => DeviceSpec::Cuda(0),
            "wgpu" => DeviceSpec::Wgpu,
            "vulkan" => DeviceSpec::Vulkan,
            "metal" => DeviceSpec::Metal,
            "tch" => DeviceSpec::Tch,
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => DeviceSpec::Cuda(i),
                _ => {
                    return Err(format!(
                        "unknown device `{other}`: expected cpu, cuda, cuda:N, wgpu, vulkan, metal or tch"
                    ));
                }
            },
        })
    }
}

/// A command that runs on whichever backend [`dispatch`] picks.
pub trait OnBackend {
    /// What the command returns.
    type Output;

    /// Runs on backend `B`'s `device`.
    fn run<B: Backend>(self, device: B::Device, spec: DeviceSpec) -> Result<Self::Output>;
}

/// `on_device!(spec, args: Args => body)`: runs `body::<B>(args, &device, spec)` on `spec`'s
/// backend through [`dispatch`], for a command whose body is one generic function.
macro_rules! on_device {
    ($spec:expr, $args:ident : $ty:ty => $body:ident) => {{
        struct Job($ty);
        impl $crate::device::OnBackend for Job {
            type Output = std::process::ExitCode;
            fn run<B: burn::tensor::backend::Backend>(
                self,
                device: B::Device,
                spec: $crate::device::DeviceSpec,
            ) -> anyhow::Result<std::process::ExitCode> {
                $body::<B>(self.0, &device, spec)
            }
        }
        $crate::device::dispatch($spec, Job($args))
    }};
}
pub(crate) use on_device;

/// Runs `job` on `spec`'s backend, after checking that it is compiled in and that the device
/// answers.
pub fn dispatch<J: OnBackend>(spec: DeviceSpec, job: J) -> Result<J::Output> {
    if !spec.compiled() {
        let feature = spec.feature().unwrap_or_default();
        bail!(
            "--device {spec}: this xtask was built without the `{feature}` feature; run it as \
             `cargo run -p xtask --features {feature} -- ...` (or `cargo xtask-gpu ...`, which has cuda and wgpu; \
             `scripts/libtorch.sh ...` for tch)"
        );
    }
    match spec {
        DeviceSpec::Cpu => run_checked::<burn::backend::Flex, J>(Default::default(), spec, job),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => {
            run_checked::<burn::backend::Cuda, J>(burn::backend::cuda::CudaDevice { index }, spec, job)
        }
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu | DeviceSpec::Vulkan | DeviceSpec::Metal => {
            let device = wgpu::device(spec)?;
            run_checked::<burn::backend::Wgpu, J>(device, spec, job)
        }
        #[cfg(feature = "tch")]
        DeviceSpec::Tch => {
            // LibTorch's intra-op pool gets as many threads as rayon's (`--threads`, else every core).
            tch::set_num_threads(i32::try_from(rayon::current_num_threads()).unwrap_or(i32::MAX));
            run_checked::<burn::backend::LibTorch<f32>, J>(burn::backend::libtorch::LibTorchDevice::Cpu, spec, job)
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("checked by `compiled` above"),
    }
}

fn run_checked<B: Backend, J: OnBackend>(device: B::Device, spec: DeviceSpec, job: J) -> Result<J::Output> {
    if let Err(why) = probe::<B>(&device) {
        bail!("--device {spec}: no such device here ({why})");
    }
    job.run::<B>(device, spec)
}

/// Whether `spec` is compiled in and answers (for `backends`, which skips absent devices).
pub fn present(spec: DeviceSpec) -> std::result::Result<(), String> {
    struct Probe;
    impl OnBackend for Probe {
        type Output = ();
        fn run<B: Backend>(self, _device: B::Device, _spec: DeviceSpec) -> Result<()> {
            Ok(())
        }
    }
    if !spec.compiled() {
        return Err(format!("not compiled in (feature `{}`)", spec.feature().unwrap_or_default()));
    }
    dispatch(spec, Probe).map_err(|e| format!("{e:#}"))
}

/// Creates a tensor on `device` and reads a sum back. A backend without its driver or device
/// panics on first use, sometimes in a thread of its own; the panics are caught, kept quiet, and
/// the first one's message is the reason returned.
fn probe<B: Backend>(device: &B::Device) -> std::result::Result<(), String> {
    let outcome = quietly(|| Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], device).sum().into_scalar().elem::<f64>());
    match outcome {
        Ok(6.0) => Ok(()),
        Ok(sum) => Err(format!("a test sum of 1+2+3 gave {sum}")),
        Err(why) => Err(why),
    }
}

/// Runs `f`, catching its panic and those of other threads meanwhile (a backend's server thread);
/// returns the first panic's message, without printing any.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the backend panicked".into());
        if let Ok(mut m) = MESSAGES.lock() {
            m.push(message.lines().next().unwrap_or_default().to_string());
        }
    }));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    let messages = std::mem::take(&mut *MESSAGES.lock().unwrap_or_else(|p| p.into_inner()));
    outcome.map_err(|_| {
        let first = messages.into_iter().next().unwrap_or_else(|| "the backend panicked".into());
        // cudarc's missing-driver message goes on to list 34 library names.
        match first.split_once(" - searched for") {
            Some((head, _)) => format!("{head}: no CUDA driver on this machine"),
            None => first,
        }
    })
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use anyhow::{Result, bail};
    use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, graphics, init_setup};

    use super::DeviceSpec;

    /// The wgpu device for `spec`. `vulkan` and `metal` initialize the default device on that
    /// graphics API once per process; `wgpu` leaves the choice to wgpu (at first use).
    pub fn device(spec: DeviceSpec) -> Result<WgpuDevice> {
        static DONE: Mutex<BTreeMap<String, Result<(), String>>> = Mutex::new(BTreeMap::new());
        let device = WgpuDevice::DefaultDevice;
        let init: fn(&WgpuDevice) = match spec {
            DeviceSpec::Vulkan => |d| {
                init_setup::<graphics::Vulkan>(d, RuntimeOptions::default());
            },
            DeviceSpec::Metal => |d| {
                init_setup::<graphics::Metal>(d, RuntimeOptions::default());
            },
            _ => return Ok(device),
        };
        let mut done = DONE.lock().expect("not poisoned: the init's panic is caught");
        if done.keys().any(|k| k != &spec.to_string()) {
            bail!("--device {spec}: wgpu's default device was already set up on another graphics API in this process");
        }
        let outcome = done.entry(spec.to_string()).or_insert_with(|| super::quietly(|| init(&device)));
        match outcome {
            Ok(()) => Ok(device),
            Err(why) => {
                bail!("--device {spec}: no {spec} adapter here ({})", why.lines().next().unwrap_or("no reason given"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for (text, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("CUDA", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
            ("wgpu", DeviceSpec::Wgpu),
            ("vulkan", DeviceSpec::Vulkan),
            ("metal", DeviceSpec::Metal),
            ("tch", DeviceSpec::Tch),
        ] {
            assert_eq!(text.parse::<DeviceSpec>(), Ok(spec));
            assert_eq!(spec.to_string().parse::<DeviceSpec>(), Ok(spec));
        }
        for bad in ["gpu", "cuda:", "cuda:x", "tpu"] {
            let error = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(error.contains("expected cpu, cuda, cuda:N"), "{error}");
        }
    }

    #[test]
    fn the_cpu_is_always_there_and_a_missing_feature_is_named() {
        assert_eq!(present(DeviceSpec::Cpu), Ok(()));
        if !cfg!(feature = "cuda") {
            let error = present(DeviceSpec::Cuda(0)).unwrap_err();
            assert!(error.contains("feature `cuda`"), "{error}");
        }
        if !cfg!(feature = "wgpu") {
            let error = present(DeviceSpec::Vulkan).unwrap_err();
            assert!(error.contains("feature `wgpu`"), "{error}");
        }
    }
}
