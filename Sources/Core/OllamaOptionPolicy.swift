/// What clients may ask of Ollama beyond their own answer: the options that decide how a model
/// is loaded (context size, GPU layers, batch, threads) and how long it stays loaded. One
/// tenant setting them reloads or unloads the model for everyone, so by default the gateway
/// drops them; the operator can let some through (`OLLAMA_ALLOWED_OPTIONS`), cap the context
/// size (`OLLAMA_MAX_NUM_CTX`) and set a keep-alive of its own (`OLLAMA_KEEP_ALIVE`).
public struct OllamaOptionPolicy: Sendable, Equatable {
    /// The resource options the policy governs: `keep_alive` (a request field) and Ollama's
    /// runner options (`api.Runner`, set when a model is loaded).
    public static let governed: Set<String> = [
        "keep_alive", "num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread", "draft_num_predict",
    ]

    /// Governed options a client may set.
    public var allowed: Set<String>
    /// The largest `num_ctx` a client gets when it may set it (`nil`: no cap).
    public var maxNumCtx: Int64?
    /// The keep-alive the gateway sends when the client sends none (or may not): a Go duration
    /// such as `10m`, or seconds (`-1`: forever). `nil`: Ollama's own default.
    public var keepAlive: String?

    public init(allowed: Set<String> = [], maxNumCtx: Int64? = nil, keepAlive: String? = nil) {
        self.allowed = allowed
        self.maxNumCtx = maxNumCtx
        self.keepAlive = keepAlive
    }

    /// Whether a client's option of this name is dropped.
    public func drops(_ option: String) -> Bool {
        Self.governed.contains(option) && !allowed.contains(option)
    }
}
