//! GGUF files: a written file reads back (metadata, tensor table, dequantized data), and damaged
//! ones are refused naming the field or tensor.

use burn::tensor::TensorData;
use rag_hf::{GgmlType, GgufFile, GgufTensorData, GgufValue, write_gguf};

fn f16(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

fn sample(path: &std::path::Path) {
    let weights: Vec<u8> = (0..6).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
    let mut q8 = f16(0.25).to_vec();
    q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
    let meta = [
        ("general.architecture", GgufValue::String("llama".into())),
        ("llama.block_count", GgufValue::U32(1)),
        ("tokenizer.ggml.tokens", GgufValue::Array(vec![GgufValue::String("a".into()), GgufValue::String("b".into())])),
    ];
    let tensors = [
        GgufTensorData { name: "w".into(), kind: GgmlType::F32, dims: vec![3, 2], bytes: weights },
        GgufTensorData { name: "q".into(), kind: GgmlType::Q8_0, dims: vec![32], bytes: q8 },
    ];
    write_gguf(path, &meta, &tensors).unwrap();
}

#[test]
fn a_written_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    sample(&path);
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.get("llama.block_count").and_then(GgufValue::as_u64), Some(1));
    assert_eq!(file.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array).map(<[_]>::len), Some(2));
    let w = file.dequantize("w").unwrap();
    assert_eq!(w, TensorData::new(vec![0.0f32, 0.5, 1.0, 1.5, 2.0, 2.5], [2, 3]), "ggml [3, 2] is row-major [2, 3]");
    let q = file.dequantize("q").unwrap().into_vec::<f32>().unwrap();
    assert_eq!((q[0], q[31]), (-4.0, 3.75));
    let err = file.dequantize("nothing").unwrap_err().to_string();
    assert!(err.contains("m.gguf") && err.contains("no tensor `nothing`"), "{err}");
}

#[test]
fn damaged_files_are_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    sample(&path);
    let good = std::fs::read(&path).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GGML".iter().chain(&good[4..]).copied().collect(), "no `GGUF` magic"),
        (good[..4].iter().chain(&9u32.to_le_bytes()).chain(&good[8..]).copied().collect(), "version 9"),
        (good[..60].to_vec(), "tensor count 2: the 44 bytes left cannot hold that many"),
        (good[..140].to_vec(), "the file ends"),
        (good[..good.len() - 40].to_vec(), "does not lie aligned inside"),
        // A metadata count no file could hold.
        (
            good[..16].iter().chain(&u64::MAX.to_le_bytes()).chain(&good[24..]).copied().collect(),
            "cannot hold that many",
        ),
    ];
    for (bytes, want) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let err = GgufFile::open(&path).unwrap_err().to_string();
        assert!(err.contains("m.gguf") && err.contains(want), "{err} (wanted {want})");
    }
}
