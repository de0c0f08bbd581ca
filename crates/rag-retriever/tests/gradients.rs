//! The retrieval scores `q·d` train the query encoder and only it: the doc-score gradient
//! reaches every query-encoder parameter (and matches finite differences in f64), and never a
//! document-encoder parameter, whether the encoders are separate or shared.

mod common;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};
use common::{Ad, values};
use rag_check::gradcheck::{ToF64, directional_derivative};
use rag_retriever::{BertConfig, BiEncoder, Encoder, Pooling, TokenBatch};

type Grads = <Ad as AutodiffBackend>::Gradients;

/// Each float parameter's id and its gradient (`None` when it got none).
struct CollectGrads<'a> {
    grads: &'a Grads,
    out: Vec<(ParamId, Option<Vec<f64>>)>,
}

impl ModuleVisitor<Ad> for CollectGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
        self.out.push((param.id, param.val().grad(self.grads).map(values)));
    }
}

fn grads_of<M: Module<Ad>>(module: &M, grads: &Grads) -> Vec<(ParamId, Option<Vec<f64>>)> {
    let mut visitor = CollectGrads { grads, out: Vec::new() };
    module.visit(&mut visitor);
    visitor.out
}

fn config() -> BertConfig {
    BertConfig::new(30, 16, 2, 2, 24, 12)
}

fn queries() -> TokenBatch {
    TokenBatch::new(vec![2, 7, 9, 3, 0, 2, 11, 12, 13, 3], vec![1, 1, 1, 1, 0, 1, 1, 1, 1, 1], None, 2, 5).unwrap()
}

/// Three documents per query, `[6, len]`.
fn documents() -> TokenBatch {
    let ids = vec![
        2, 7, 9, 14, 3, 2, 15, 16, 3, 0, 2, 17, 3, 0, 0, //
        2, 11, 12, 18, 3, 2, 19, 3, 0, 0, 2, 20, 21, 22, 3,
    ];
    let mask = ids.iter().enumerate().map(|(i, &id)| i64::from(id != 0 || i % 5 == 0)).collect();
    TokenBatch::new(ids, mask, None, 6, 5).unwrap()
}

/// `−Σ_b log p(gold | q_b)` with the first document as gold: the retrieval part of RAG's loss.
fn loss(queries: Tensor<Ad, 2>, documents: Tensor<Ad, 2>) -> Tensor<Ad, 1> {
    let [b, d] = queries.dims();
    let scores = BiEncoder::<Ad>::scores(queries, documents.reshape([b, 3, d]));
    -log_softmax(scores, 1).narrow(1, 0, 1).sum()
}

fn nonzero(g: &[f64]) -> bool {
    g.iter().any(|x| *x != 0.0)
}

#[test]
fn separate_encoders_only_the_query_side_gets_gradients() {
    let device = Default::default();
    let query = Encoder::<Ad>::init(&config(), Pooling::Cls, false, &device).unwrap();
    let document = Encoder::<Ad>::init(&config(), Pooling::Cls, false, &device).unwrap();
    let bi = BiEncoder::separate(query, document).unwrap();
    let q = bi.encode_queries(&queries()).unwrap();
    let d = bi.encode_documents(&documents()).unwrap();
    let grads = loss(q, d).backward();

    let query_grads = grads_of(bi.query_encoder(), &grads);
    assert!(query_grads.len() > 30, "every embedding, linear and norm of 2 layers");
    for (id, g) in &query_grads {
        let g = g.as_ref().unwrap_or_else(|| panic!("query parameter {id} got no gradient"));
        assert!(nonzero(g), "query parameter {id} got an all-zero gradient");
    }
    for (id, g) in grads_of(bi.document_encoder(), &grads) {
        assert!(g.is_none(), "document parameter {id} got a gradient");
    }
}

#[test]
fn shared_encoder_documents_are_constants_unless_made_trainable() {
    let device = Default::default();
    let encoder = Encoder::<Ad>::init(&config(), Pooling::Mean, true, &device).unwrap();
    let bi = BiEncoder::shared(encoder);
    let grads = loss(bi.encode_queries(&queries()).unwrap(), bi.encode_documents(&documents()).unwrap()).backward();
    let detached = grads_of(bi.query_encoder(), &grads);

    // The same documents as a plain constant give the very same gradients.
    let constant = bi.encode_documents(&documents()).unwrap().into_data();
    let constant = Tensor::<Ad, 2>::from_data(constant, &device);
    let grads = loss(bi.encode_queries(&queries()).unwrap(), constant).backward();
    assert_eq!(detached, grads_of(bi.query_encoder(), &grads));

    // End-to-end variant: the gradient also flows through the re-encoded documents.
    let bi = bi.with_trainable_documents(true);
    let grads = loss(bi.encode_queries(&queries()).unwrap(), bi.encode_documents(&documents()).unwrap()).backward();
    let through_docs = grads_of(bi.query_encoder(), &grads);
    assert_eq!(through_docs.len(), detached.len());
    assert_ne!(through_docs, detached);
}

#[test]
fn query_encoder_gradient_matches_finite_differences_in_f64() {
    let device = Default::default();
    let query = Encoder::<Ad>::init(&config(), Pooling::Mean, false, &device).unwrap().map(&mut ToF64);
    let document = Encoder::<Ad>::init(&config(), Pooling::Cls, false, &device).unwrap().map(&mut ToF64);
    let docs = BiEncoder::separate(query.clone(), document).unwrap().encode_documents(&documents()).unwrap();
    assert_eq!(docs.dtype(), DType::F64);
    let check = directional_derivative(&query, |q| loss(q.encode(&queries()).unwrap(), docs.clone()), 1, 1e-5);
    println!(
        "directional derivative: analytic {:.12e}, central difference {:.12e}, relative {:.2e}",
        check.analytic,
        check.numeric,
        check.relative_error()
    );
    assert!(check.params_with_grad > 30, "{check:?}");
    assert!(check.relative_error() < 1e-6, "{check:?}");
}
