// Adapters from the model runtime (src/model) to the engine's interfaces:
// a ModelRunner over a loaded model::Backend, and a TextStreamFactory over
// the tokenizer's incremental Detokenizer.
//
// Thread safety: as the wrapped objects (the engine uses them from its own
// thread only).
#pragma once

#include <memory>

#include "engine/model_runner.h"
#include "engine/output_text.h"

namespace crescent {
class Tokenizer;
namespace model {
class Backend;
}  // namespace model
}  // namespace crescent

namespace crescent::engine {

// A ModelRunner that owns `backend`. The prefix-cache fingerprint is the
// backend's model fingerprint plus its KV layout tag (dtype, shape, block
// size), the lineage the KV store keys use too.
std::unique_ptr<ModelRunner> MakeBackendRunner(std::unique_ptr<model::Backend> backend);

// Same, borrowing: `backend` must outlive the runner (for a KV connector that
// also reads and writes the backend's blocks).
std::unique_ptr<ModelRunner> MakeBorrowedBackendRunner(model::Backend* backend);

// Detokenizers over `tokenizer`, which must outlive every stream.
TextStreamFactory MakeDetokenizerFactory(const Tokenizer* tokenizer);

}  // namespace crescent::engine
