import JSONKit

/// How large a prompt a request can become, read from its JSON: an upper bound needs the bytes
/// of its text (a byte-level tokenizer makes at most one token per byte), how many images it
/// carries (each costs up to the model's per-image maximum, whatever its size in base64) and how
/// many messages (each adds the chat template's few tokens of role markers).
public struct PromptSize: Sendable, Equatable {
    /// The request body's bytes without the base64 data of its images.
    public var textBytes: Int64
    public var images: Int64
    public var messages: Int64

    public init(textBytes: Int64, images: Int64 = 0, messages: Int64 = 0) {
        self.textBytes = textBytes
        self.images = images
        self.messages = messages
    }

    init(bodyBytes: Int) {
        self.init(textBytes: Int64(bodyBytes))
    }

    /// Counts an image whose data (or URL) is the string `data`.
    mutating func addImage(_ data: JSONValue?) {
        images += 1
        if let data { textBytes -= Int64(data.rawBytes.count) }
    }

    /// Ollama's native requests: `images` (bare base64 strings) on chat messages or on a
    /// generate request. Fields are found as Ollama finds them, ignoring case.
    static func ollama(_ root: JSONValue, bodyBytes: Int) -> PromptSize {
        var size = PromptSize(bodyBytes: bodyBytes)
        for image in root.field("images").elements { size.addImage(image) }
        if let messages = root.field("messages") {
            size.messages = Int64(messages.count)
            for message in messages.elements {
                for image in message.field("images").elements { size.addImage(image) }
            }
        }
        return size
    }

    /// OpenAI chat requests: `image_url` content parts (a data URI or a URL).
    public static func openAI(_ root: JSONValue, bodyBytes: Int) -> PromptSize {
        var size = PromptSize(bodyBytes: bodyBytes)
        guard let messages = root["messages"] else { return size }
        size.messages = Int64(messages.count)
        for message in messages.elements {
            for part in message["content"].elements where part["type"]?.isString("image_url") == true {
                let image = part["image_url"]
                size.addImage(image?["url"] ?? image)
            }
        }
        return size
    }

    /// Anthropic requests: `image` blocks in messages and in tool results.
    public static func anthropic(_ root: JSONValue, bodyBytes: Int) -> PromptSize {
        var size = PromptSize(bodyBytes: bodyBytes)
        guard let messages = root["messages"] else { return size }
        size.messages = Int64(messages.count) + (root["system"] == nil ? 0 : 1)
        func visit(_ blocks: JSONValue?) {
            for block in blocks.elements {
                if block["type"]?.isString("image") == true {
                    let source = block["source"]
                    size.addImage(source?["data"] ?? source?["url"])
                } else if block["type"]?.isString("tool_result") == true {
                    visit(block["content"])
                }
            }
        }
        for message in messages.elements { visit(message["content"]) }
        return size
    }
}
