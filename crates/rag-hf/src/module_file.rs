//! A whole Burn module's float parameters to and from one safetensors file, each tensor named by
//! its module path (`generator.decoder.layers.0.self_attn.q_proj.weight`). Whole-model
//! checkpoints use it: the file is plain safetensors, readable by any tool, and loading refuses a
//! file that does not fit the module (a missing or extra tensor, a wrong shape) by name.

use std::collections::BTreeSet;
use std::path::Path;

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

struct Apply<'a> {
    checkpoint: &'a Checkpoint,
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
        let Some(found) = self.checkpoint.shape(name) else {
            self.error = Some(self.checkpoint.missing(name, ""));
            return None;
        };
        if found != expected {
            self.error = Some(HfError::ShapeMismatch {
                name: name.to_string(),
                file: self.checkpoint.location().to_path_buf(),
                expected: expected.to_vec(),
                found: found.to_vec(),
            });
            return None;
        }
        match self.checkpoint.read(name) {
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
    let mut apply =
        Apply { checkpoint: &checkpoint, dtype, path: ModulePath::default(), used: BTreeSet::new(), error: None };
    let module = module.map(&mut apply);
    if let Some(e) = apply.error {
        return Err(e);
    }
    if let Some(extra) = checkpoint.names().find(|n| !apply.used.contains(*n)) {
        return Err(HfError::Malformed {
            path: path.to_path_buf(),
            message: format!("tensor `{extra}` belongs to no parameter of the model (a checkpoint of another model?)"),
        });
    }
    Ok(module)
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
