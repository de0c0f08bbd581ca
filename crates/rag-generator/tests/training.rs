//! The teacher-forced forward passes are differentiable: gradients of a token NLL reach every
//! parameter and match finite differences in f64.

mod common;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use common::Ad;
use rag_check::gradcheck::{ToF64, directional_derivative};
use rag_generator::{Bart, BartBatch, BartConfig, Llama, LlamaConfig, Padded, PaddingSide};

fn ids(rows: &[Vec<u32>], side: PaddingSide, pad: u32) -> (Tensor<Ad, 2, Int>, Tensor<Ad, 2, Int>) {
    Padded::new(rows, pad, side).tensors::<Ad>(&Default::default())
}

/// Mean NLL of `targets` under `logits` `[b, t, V]` where `mask` is 1.
fn nll(logits: Tensor<Ad, 3>, targets: Tensor<Ad, 2, Int>, mask: Tensor<Ad, 2, Int>) -> Tensor<Ad, 1> {
    let [b, t, _] = logits.dims();
    let picked = log_softmax(logits, 2).gather(2, targets.reshape([b, t, 1])).reshape([b, t]);
    let mask = mask.float().cast(picked.dtype());
    (picked * mask.clone()).sum().neg() / mask.sum()
}

#[test]
fn bart_gradients_match_finite_differences_in_f64() {
    let mut config = BartConfig::new(24, 8, 1, 2, 16);
    config.max_position_embeddings = 16;
    config.init_std = 0.3;
    let model = Bart::<Ad>::init(&config, 0.0, &Default::default()).unwrap().map(&mut ToF64);
    let (input_ids, attention_mask) = ids(&[vec![0, 5, 9, 2], vec![0, 7, 2]], PaddingSide::Right, 1);
    let (decoder_input_ids, decoder_mask) = ids(&[vec![2, 4, 6], vec![2, 8]], PaddingSide::Right, 1);
    let (labels, _) = ids(&[vec![4, 6, 2], vec![8, 2]], PaddingSide::Right, 1);
    let loss = |m: &Bart<Ad>| {
        let logits = m.forward(BartBatch {
            input_ids: input_ids.clone(),
            attention_mask: attention_mask.clone(),
            decoder_input_ids: decoder_input_ids.clone(),
            decoder_attention_mask: Some(decoder_mask.clone()),
        });
        nll(logits, labels.clone(), decoder_mask.clone())
    };
    let check = directional_derivative(&model, loss, 7, 1e-5);
    println!("bart: {check:?} relative {:.2e}", check.relative_error());
    // Every trainable tensor (all but the final_logits_bias buffer) gets a gradient.
    assert_eq!(check.params_with_grad, model.num_params_tensors() - 1);
    assert!(check.relative_error() < 1e-6, "{check:?}");
}

#[test]
fn llama_gradients_match_finite_differences_in_f64_with_left_padding() {
    let mut config = LlamaConfig::new(24, 8, 2, 2, 1, 12);
    config.initializer_range = 0.3;
    let model = Llama::<Ad>::init(&config, 0.0, &Default::default()).unwrap().map(&mut ToF64);
    let (input_ids, mask) = ids(&[vec![1, 5, 9, 3], vec![1, 7]], PaddingSide::Left, 0);
    let (labels, _) = ids(&[vec![5, 9, 3, 2], vec![0, 0, 7, 2]], PaddingSide::Left, 0);
    let loss = |m: &Llama<Ad>| nll(m.forward(input_ids.clone(), mask.clone()), labels.clone(), mask.clone());
    let check = directional_derivative(&model, loss, 11, 1e-5);
    println!("llama: {check:?} relative {:.2e}", check.relative_error());
    assert_eq!(check.params_with_grad, model.num_params_tensors());
    assert!(check.relative_error() < 1e-6, "{check:?}");
}

trait CountTensors {
    fn num_params_tensors(&self) -> usize;
}

impl<M: Module<Ad>> CountTensors for M {
    fn num_params_tensors(&self) -> usize {
        struct Count(usize);
        impl burn::module::ModuleVisitor<Ad> for Count {
            fn visit_float<const D: usize>(&mut self, _: &burn::module::Param<Tensor<Ad, D>>) {
                self.0 += 1;
            }
        }
        let mut count = Count(0);
        self.visit(&mut count);
        count.0
    }
}
