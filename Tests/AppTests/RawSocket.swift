#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Testing

/// A blocking loopback TCP client for what HTTP clients will not do: stop mid-request, sit idle,
/// or reset the connection. Its reads block, so they run on a thread of their own: blocked on
/// Swift's cooperative pool (two threads here) they would starve the gateway's own tasks in
/// tests that run at the same time.
struct RawSocket: Sendable {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`; reads give up after `readTimeout` seconds, so a server that
    /// never answers or never closes fails the test instead of hanging it.
    init(port: Int, readTimeout: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var timeout = timeval(tv_sec: readTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(connected == 0)
    }

    func send(_ text: String) throws {
        let sent = text.utf8CString.withUnsafeBufferPointer { Glibc.send(fd, $0.baseAddress, $0.count - 1, 0) }
        try #require(sent == text.utf8.count)
    }

    /// Reads until `done` holds for what arrived so far; nil if the connection closed or the read
    /// timed out first. `thenReset`: resets the connection at once on the same thread, with no
    /// wait for a busy task pool in between.
    func read(until done: @escaping @Sendable ([UInt8]) -> Bool, thenReset: Bool = false) async -> [UInt8]? {
        await Self.onOwnThread { [self] in
            var bytes: [UInt8] = []
            while !done(bytes) {
                guard let chunk = Self.receive(fd) else { return nil }
                if chunk.isEmpty { return nil }
                bytes += chunk
            }
            if thenReset { reset() }
            return bytes
        }
    }

    /// Reads until the server closes the connection (recv returns 0), returning what came; nil if
    /// the read timed out first (the server kept the connection open).
    func readUntilClosed() async -> String? {
        await Self.onOwnThread { [fd] in
            var bytes: [UInt8] = []
            while true {
                guard let chunk = Self.receive(fd) else { return nil }
                if chunk.isEmpty { return String(decoding: bytes, as: UTF8.self) }
                bytes += chunk
            }
        }
    }

    /// One recv: the bytes, empty at end of stream, nil on timeout or error. Retried when a
    /// signal interrupts it (other tests' child processes exit meanwhile).
    private static func receive(_ fd: Int32) -> [UInt8]? {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count >= 0 { return Array(chunk[..<count]) }
            if errno != EINTR { return nil }
        }
    }

    private static func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: body()) }.start()
        }
    }

    func close() { _ = Glibc.close(fd) }

    /// Closes with a reset (SO_LINGER 0): the server's next write fails at once.
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close()
    }
}
