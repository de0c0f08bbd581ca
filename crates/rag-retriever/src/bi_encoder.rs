//! `BiEncoder`: a query encoder and a document encoder (shared or separate) whose inner
//! products are the retrieval scores `q·d`.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::tokenize::TokenBatch;
use crate::{Encoder, Result, RetrieverError};

/// A DPR-style bi-encoder. RAG and RA-DIT train only the query encoder: document vectors come
/// out of [`BiEncoder::encode_documents`] cut from the autodiff graph, and a separate document
/// encoder is frozen, so the doc-score gradient reaches the query encoder and never the
/// document side. [`BiEncoder::with_trainable_documents`] lifts that for end-to-end variants
/// that re-encode the retrieved passages in the step.
#[derive(Module, Debug)]
pub struct BiEncoder<B: Backend> {
    query: Encoder<B>,
    /// `None`: the query encoder encodes documents too (shared weights).
    document: Option<Encoder<B>>,
    train_documents: bool,
}

impl<B: Backend> BiEncoder<B> {
    /// One encoder for queries and documents (sentence-transformers, Contriever).
    pub fn shared(encoder: Encoder<B>) -> Self {
        Self { query: encoder, document: None, train_documents: false }
    }

    /// Separate encoders (DPR). Their output widths must agree; the document encoder is frozen.
    pub fn separate(query: Encoder<B>, document: Encoder<B>) -> Result<Self> {
        if query.dim() != document.dim() {
            return Err(RetrieverError::Input {
                field: "document encoder",
                message: format!("output width {} differs from the query encoder's {}", document.dim(), query.dim()),
            });
        }
        Ok(Self { query, document: Some(document.no_grad()), train_documents: false })
    }

    /// Lets the gradient reach the document encoder (through re-encoded passages).
    pub fn with_trainable_documents(mut self, trainable: bool) -> Self {
        self.train_documents = trainable;
        self.document = self.document.map(|d| if trainable { d.map(&mut RequireGrad) } else { d.no_grad() });
        self
    }

    /// The query encoder.
    pub fn query_encoder(&self) -> &Encoder<B> {
        &self.query
    }

    /// The document encoder (the query encoder when shared).
    pub fn document_encoder(&self) -> &Encoder<B> {
        self.document.as_ref().unwrap_or(&self.query)
    }

    /// Output width of both encoders.
    pub fn dim(&self) -> usize {
        self.query.dim()
    }

    /// Query vectors `[batch, dim]`, in the autodiff graph.
    pub fn encode_queries(&self, batch: &TokenBatch) -> Result<Tensor<B, 2>> {
        self.query.encode(batch)
    }

    /// Document vectors `[batch, dim]`: constants unless documents are trainable.
    pub fn encode_documents(&self, batch: &TokenBatch) -> Result<Tensor<B, 2>> {
        let vectors = self.document_encoder().encode(batch)?;
        Ok(if self.train_documents { vectors } else { vectors.detach().set_require_grad(false) })
    }

    /// Retrieval scores `[batch, k]` = `q_b · d_{b,j}` for queries `[batch, dim]` and each
    /// query's documents `[batch, k, dim]`.
    pub fn scores(queries: Tensor<B, 2>, documents: Tensor<B, 3>) -> Tensor<B, 2> {
        let [batch, dim] = queries.dims();
        let k = documents.dims()[1];
        documents.matmul(queries.reshape([batch, dim, 1])).reshape([batch, k])
    }
}

/// Marks every float parameter trainable again (the inverse of `Module::no_grad`).
struct RequireGrad;

impl<B: Backend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}
