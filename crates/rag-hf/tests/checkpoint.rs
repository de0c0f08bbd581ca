//! Opening checkpoints: what is read, and what is refused with the file named.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::DType;
use rag_hf::{Checkpoint, HfError, Loader};
use safetensors::tensor::{Dtype, TensorView};

fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn linear_weights_are_transposed_and_layer_norm_accepts_gamma_beta() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    write(
        &path,
        &[
            // PyTorch [out=3, in=2].
            ("lin.weight", Dtype::F32, vec![3, 2], f32_bytes(&[1., 2., 3., 4., 5., 6.])),
            ("lin.bias", Dtype::F32, vec![3], f32_bytes(&[0.5, 0., -0.5])),
            ("norm.gamma", Dtype::F32, vec![2], f32_bytes(&[1., 1.])),
            ("norm.beta", Dtype::F32, vec![2], f32_bytes(&[0., 0.])),
        ],
    );
    let checkpoint = Checkpoint::open(&path).unwrap();
    let loader = Loader::<Flex>::new(&checkpoint, "", &Default::default(), DType::F32);
    let lin = loader.linear("lin", 2, 3, true).unwrap();
    let x = burn::tensor::Tensor::<Flex, 2>::from_data([[1.0f32, 1.0]], &Default::default());
    let y: Vec<f32> = lin.forward(x).into_data().to_vec().unwrap();
    assert_eq!(y, vec![3.5, 7.0, 10.5], "y = W·x + b with W in PyTorch's [out, in]");
    assert!(loader.layer_norm("norm", 2, 1e-5).is_ok());
    assert!(matches!(loader.embedding("emb", 3, 2), Err(HfError::MissingTensor { .. })));
    let err = loader.embedding("lin", 2, 3).unwrap_err();
    assert!(matches!(&err, HfError::ShapeMismatch { expected, found, .. } if expected == &[2, 3] && found == &[3, 2]));
    assert!(err.to_string().contains("`lin.weight` in") && err.to_string().contains("m.safetensors"), "{err}");
}

#[test]
fn integer_tensors_and_bad_shard_indexes_are_refused_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write(&path, &[("ids", Dtype::I32, vec![2], vec![1, 0, 0, 0, 2, 0, 0, 0])]);
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    let err = checkpoint.read("ids").unwrap_err().to_string();
    assert!(err.contains("`ids`") && err.contains("I32") && err.contains("model.safetensors"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.safetensors"), &[("x", Dtype::F32, vec![1], f32_bytes(&[1.]))]);
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"x": "a.safetensors", "y": "a.safetensors"}}"#,
    )
    .unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors.index.json") && err.contains("`y`"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no model.safetensors or model.safetensors.index.json"), "{err}");

    let path = dir.path().join("cut.safetensors");
    write(&path, &[("x", Dtype::F32, vec![4], f32_bytes(&[1., 2., 3., 4.]))]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = Checkpoint::open(&path).unwrap_err().to_string();
    assert!(err.contains("cut.safetensors is not a valid safetensors file"), "{err}");
}

#[test]
fn copy_module_moves_weights_between_backends_by_path_and_refuses_another_shape() {
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Module;
    #[derive(Module, Debug)]
    struct Net<B: burn::tensor::backend::Backend> {
        first: burn::nn::Linear<B>,
        second: burn::nn::Linear<B>,
    }
    fn net<B: burn::tensor::backend::Backend>(d: usize, std: f64, device: &B::Device) -> Net<B> {
        Net {
            first: rag_hf::init_linear(3, d, true, std, device),
            second: rag_hf::init_linear(d, 2, false, std, device),
        }
    }
    let from = net::<Flex>(4, 0.5, &Default::default());
    // Another backend (NdArray, with autodiff), other weights; one parameter frozen.
    let mut into = net::<Autodiff<NdArray>>(4, 0.0, &Default::default());
    into.second = into.second.no_grad();
    let copied = rag_hf::copy_module(&from, into).unwrap();
    let source = rag_hf::module_tensors(&from);
    let target = rag_hf::module_tensors(&copied);
    assert_eq!(source.len(), 3);
    for ((name_a, a), (name_b, b)) in source.iter().zip(&target) {
        assert_eq!(name_a, name_b);
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), "{name_a}");
    }
    assert!(copied.first.weight.val().is_require_grad(), "trainable stays trainable");
    assert!(!copied.second.weight.val().is_require_grad(), "frozen stays frozen");

    let err = rag_hf::copy_module(&from, net::<Flex>(5, 0.0, &Default::default())).unwrap_err();
    assert!(matches!(&err, HfError::ShapeMismatch { name, .. } if name == "first.weight"), "{err}");
}

/// Writers of the same file at once each get their own temporary file: every write succeeds and
/// the file ends as one writer's bytes, whole (with one fixed `.tmp` name, a writer renamed away
/// another's half-written file, or failed to find its own).
#[test]
fn concurrent_atomic_writes_never_mix_or_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let contents: Vec<Vec<u8>> = (0..4u8).map(|w| vec![b'a' + w; 256 * 1024]).collect();
    std::thread::scope(|scope| {
        for bytes in &contents {
            let path = &path;
            scope.spawn(move || {
                for _ in 0..25 {
                    rag_hf::write_atomic(path, bytes).unwrap();
                }
            });
        }
    });
    let written = std::fs::read(&path).unwrap();
    assert!(contents.contains(&written), "the file is one writer's bytes, whole");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("report.json")], "no temporary file is left");
}

/// A write that fails leaves the previous file as it was and no temporary file, and the error
/// names the path.
#[test]
fn a_failed_atomic_write_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let tensor = |v: f32| vec![("w".to_string(), burn::tensor::TensorData::new(vec![v; 4], [2, 2]))];
    rag_hf::write_safetensors(&path, &tensor(1.0)).unwrap();
    let before = std::fs::read(&path).unwrap();
    // Booleans have no safetensors dtype here: the write fails after the old file exists.
    let flags = vec![("w".to_string(), burn::tensor::TensorData::new(vec![true; 4], [2, 2]))];
    let err = rag_hf::write_safetensors(&path, &flags).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("cannot be written"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let missing = dir.path().join("no-such-dir").join("report.json");
    let err = rag_hf::write_atomic(&missing, b"{}").unwrap_err().to_string();
    assert!(err.contains("no-such-dir"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
}

/// Integer tensors (token ids, passage ids) are written with their dtype, for other tools to read.
#[test]
fn integer_tensors_are_written_with_their_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.safetensors");
    let tensors = vec![
        ("ids".to_string(), burn::tensor::TensorData::new(vec![3i64, -1, 7], [3])),
        ("rows".to_string(), burn::tensor::TensorData::new(vec![1i32, 2, 3, 4], [2, 2])),
    ];
    rag_hf::write_safetensors(&path, &tensors).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = file.tensor("ids").unwrap();
    assert_eq!((ids.dtype(), ids.shape()), (Dtype::I64, &[3][..]));
    assert_eq!(ids.data(), [3i64, -1, 7].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    let rows = file.tensor("rows").unwrap();
    assert_eq!((rows.dtype(), rows.shape()), (Dtype::I32, &[2, 2][..]));
}
