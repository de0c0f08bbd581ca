//! A whole Burn module's float parameters to and from one safetensors file, each tensor named by
//! its module path (`generator.decoder.layers.0.self_attn.q_proj.weight`). Whole-model
//! checkpoints use it: the file is plain safetensors, readable by any tool, and loading refuses a
//! file that does not fit the module (a missing or extra tensor, a wrong shape) by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use crate::{Checkpoint, HfError, Result, write_safetensors};

/// The module path of the parameter a `ModuleMapper` or `ModuleVisitor` is at
/// (`generator.decoder.layers.0.self_attn.q_proj.weight`): call [`ModulePath::enter`] and
/// [`ModulePath::exit`] from `enter_module` / `exit_module`.
#[derive(Debug, Default, Clone)]
pub struct ModulePath(Vec<String>);

impl ModulePath {
    /// Steps into a field or module named `name`.
    pub fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }

    /// Steps back out.
    pub fn exit(&mut self) {
        self.0.pop();
    }

    /// The dotted path.
    pub fn name(&self) -> String {
        self.0.join(".")
    }

    /// Whether a segment of the path is `segment`.
    pub fn contains(&self, segment: &str) -> bool {
        self.0.iter().any(|s| s == segment)
    }
}

struct Collect {
    path: ModulePath,
    out: Vec<(String, TensorData)>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.push((self.path.name(), param.val().into_data()));
    }
}

/// The float parameters of `module`, named by module path, in visiting order.
pub fn module_tensors<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, TensorData)> {
    let mut collect = Collect { path: ModulePath::default(), out: Vec::new() };
    module.visit(&mut collect);
    collect.out
}

/// Writes every float parameter of `module` (trainable or not) to `path`, atomically, each in
/// its own dtype. Returns the number of tensors written.
pub fn save_module<B: Backend, M: Module<B>>(module: &M, path: &Path) -> Result<usize> {
    let tensors = module_tensors(module);
    let names: BTreeSet<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    if names.len() != tensors.len() {
        return Err(HfError::Write {
            path: path.to_path_buf(),
            message: "two parameters share a module path; the file could not be read back".into(),
        });
    }
    write_safetensors(path, &tensors)?;
    Ok(tensors.len())
}

/// Where [`Apply`] takes tensors from: a safetensors checkpoint, or another module's tensors in
/// memory (a copy between backends).
enum Source<'a> {
    File(&'a Checkpoint),
    Memory(&'a BTreeMap<String, TensorData>),
}

impl Source<'_> {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match self {
            Source::File(c) => c.shape(name).map(<[usize]>::to_vec),
            Source::Memory(m) => m.get(name).map(|d| d.shape.to_vec()),
        }
    }

    fn read(&self, name: &str) -> Result<TensorData> {
        match self {
            Source::File(c) => c.read(name),
            Source::Memory(m) => Ok(m[name].clone()),
        }
    }

    fn missing(&self, name: &str) -> HfError {
        match self {
            Source::File(c) => c.missing(name, ""),
            Source::Memory(_) => {
                HfError::MissingTensor { name: name.to_string(), location: self.location(), hint: None }
            }
        }
    }

    fn location(&self) -> PathBuf {
        match self {
            Source::File(c) => c.location().to_path_buf(),
            Source::Memory(_) => PathBuf::from("<the source module>"),
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Source::File(c) => c.names().map(str::to_string).collect(),
            Source::Memory(m) => m.keys().cloned().collect(),
        }
    }
}

struct Apply<'a> {
    source: Source<'a>,
    dtype: Option<DType>,
    path: ModulePath,
    used: BTreeSet<String>,
    error: Option<HfError>,
}

impl Apply<'_> {
    fn read(&mut self, name: &str, expected: &[usize]) -> Option<TensorData> {
        if self.error.is_some() {
            return None;
        }
        let Some(found) = self.source.shape(name) else {
            self.error = Some(self.source.missing(name));
            return None;
        };
        if found != expected {
            self.error = Some(HfError::ShapeMismatch {
                name: name.to_string(),
                file: self.source.location(),
                expected: expected.to_vec(),
                found,
            });
            return None;
        }
        match self.source.read(name) {
            Ok(data) => {
                self.used.insert(name.to_string());
                Some(data)
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    /// Maps `module` and refuses a tensor of the source that no parameter took.
    fn run<B: Backend, M: Module<B>>(mut self, module: M) -> Result<M> {
        let module = module.map(&mut self);
        if let Some(e) = self.error {
            return Err(e);
        }
        if let Some(extra) = self.source.names().into_iter().find(|n| !self.used.contains(n)) {
            return Err(HfError::Malformed {
                path: self.source.location(),
                message: format!(
                    "tensor `{extra}` belongs to no parameter of the model (a checkpoint of another model?)"
                ),
            });
        }
        Ok(module)
    }
}

impl<B: Backend> ModuleMapper<B> for Apply<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.name();
        let Some(data) = self.read(&name, &param.val().dims()) else { return param };
        let dtype = self.dtype;
        param.map(|t| {
            let trainable = t.is_require_grad();
            let loaded = Tensor::<B, D>::from_data(data, (&t.device(), dtype.unwrap_or(t.dtype())));
            if trainable { loaded.require_grad() } else { loaded }
        })
    }
}

/// Loads the float parameters of `module` from a file written by [`save_module`] for a module
/// of the same structure, each in `dtype` (`None`: the dtype the parameter has now); the
/// parameters keep their ids and trainability. A tensor the module needs and the file lacks, one of another
/// shape, or a tensor in the file that no parameter takes is an error naming it.
pub fn load_module<B: Backend, M: Module<B>>(module: M, path: &Path, dtype: Option<DType>) -> Result<M> {
    let checkpoint = Checkpoint::open(path)?;
    Apply { source: Source::File(&checkpoint), dtype, path: ModulePath::default(), used: BTreeSet::new(), error: None }
        .run(module)
}

/// Copies the float parameters of `from` (on any backend) into `into`, a module of the same
/// structure on backend `B`, by module path; each lands in the dtype and on the device its
/// parameter in `into` has, and keeps `into`'s trainability. This is how one model moves between
/// backends: build `into` from the same config on the target device, then copy. A missing, extra
/// or differently shaped tensor is an error naming it.
pub fn copy_module<B0: Backend, M0: Module<B0>, B: Backend, M: Module<B>>(from: &M0, into: M) -> Result<M> {
    let tensors: BTreeMap<String, TensorData> = module_tensors(from).into_iter().collect();
    Apply {
        source: Source::Memory(&tensors),
        dtype: None,
        path: ModulePath::default(),
        used: BTreeSet::new(),
        error: None,
    }
    .run(into)
}

struct Cast(DType);

impl<B: Backend> ModuleMapper<B> for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        param.map(|t| {
            let trainable = t.is_require_grad();
            let t = t.cast(dtype).detach();
            if trainable { t.require_grad() } else { t }
        })
    }
}

/// Casts every float parameter of `module` to `dtype` (F64, F32, F16, BF16); trainable
/// parameters stay trainable leaves.
pub fn cast_module<B: Backend, M: Module<B>>(module: M, dtype: DType) -> M {
    module.map(&mut Cast(dtype))
}

struct CastInGraph(DType);

impl<B: Backend> ModuleMapper<B> for CastInGraph {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// A copy of `module` whose float parameters are `cast(dtype)` of the originals, inside the
/// autodiff graph: a forward pass of the copy computes in `dtype`, and its backward pass reaches
/// the original parameters (cast back to their dtype). This is mixed precision: half-precision
/// compute over f32 master weights. Take gradients from the original module, not the copy.
pub fn cast_module_in_graph<B: Backend, M: Module<B>>(module: M, dtype: DType) -> M {
    module.map(&mut CastInGraph(dtype))
}
