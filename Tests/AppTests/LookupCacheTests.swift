@testable import App
import Core
import NIOConcurrencyHelpers
import Testing

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let instant = NIOLockedValueBox(ContinuousClock.now)

    var now: ContinuousClock.Instant { instant.withLockedValue { $0 } }

    func advance(_ duration: Duration) { instant.withLockedValue { $0 += duration } }
}

/// A cache with a 5 s TTL on `clock`, its feed connected, and one key remembered now.
func connectedCache(_ clock: ManualClock) -> LookupCache {
    let cache = LookupCache(ttlSeconds: 5, now: { clock.now })
    cache.handle(.connected)
    cache.remember(Principal(keyId: 1, customerId: 1, revoked: false), forHash: "h", generation: cache.generation())
    return cache
}

@Suite("LookupCache: how long an entry may be used")
struct LookupCacheTests {
    @Test func withoutUnchangedReportsAnEntryLastsItsTTLFromItsRead() {
        let clock = ManualClock()
        let cache = connectedCache(clock)
        clock.advance(.milliseconds(4999))
        #expect(cache.principal(forHash: "h") != nil)
        clock.advance(.milliseconds(2))
        #expect(cache.principal(forHash: "h") == nil)
    }

    @Test func unchangedReportsKeepEntriesPastTheirTTLAndTheTTLBoundsStalenessOnceTheyStop() {
        let clock = ManualClock()
        let cache = connectedCache(clock)
        let price = ModelPrice(perRequest: Money(nanos: 7))
        cache.remember(price, source: .configured, nextChangeMicros: nil, for: "llama3:latest", generation: cache.generation())
        for _ in 0..<200 { // 10 s of polls every 50 ms, each finding nothing changed
            clock.advance(.milliseconds(50))
            cache.handle(.unchanged(asOf: clock.now))
        }
        #expect(cache.principal(forHash: "h") != nil)
        #expect(cache.price(for: "llama3:latest", nowMicros: 0) != nil)
        // The feed stalls: a change it misses now is served for at most the TTL.
        clock.advance(.milliseconds(4999))
        #expect(cache.principal(forHash: "h") != nil)
        #expect(cache.price(for: "llama3:latest", nowMicros: 0) != nil)
        clock.advance(.milliseconds(2))
        #expect(cache.principal(forHash: "h") == nil)
        #expect(cache.price(for: "llama3:latest", nowMicros: 0) == nil)
    }

    @Test func aPriceIsNotUsedOnceTheNextRowComesIntoForceByItsDate() {
        let clock = ManualClock()
        let cache = connectedCache(clock)
        let price = ModelPrice(perRequest: Money(nanos: 7))
        // The next row comes into force at 1,000 µs (wall clock), with no commit to report it.
        cache.remember(price, source: .configured, nextChangeMicros: 1_000, for: "llama3", generation: cache.generation())
        #expect(cache.price(for: "llama3", nowMicros: 999) != nil)
        #expect(cache.price(for: "llama3", nowMicros: 1_000) == nil)
        // However recently the feed vouched for it.
        cache.handle(.unchanged(asOf: clock.now))
        #expect(cache.price(for: "llama3", nowMicros: 1_000) == nil)
    }

    @Test func aMarkerThisProcessSentConfirmsAsOfWhenItWasSent() {
        let clock = ManualClock()
        let cache = connectedCache(clock) // key read at 0 s, TTL 5 s
        clock.advance(.seconds(3))
        cache.expectSync("mine-1") // sent at 3 s
        clock.advance(.seconds(1))
        cache.handle(.notice("sync:mine-1")) // heard at 4 s: current as of 3 s, so usable until 8 s
        clock.advance(.milliseconds(3999))
        #expect(cache.principal(forHash: "h") != nil)
        clock.advance(.milliseconds(2))
        #expect(cache.principal(forHash: "h") == nil)
    }

    @Test func anotherReplicasMarkerConfirmsNothing() {
        let clock = ManualClock()
        let cache = connectedCache(clock) // key read at 0 s, TTL 5 s
        clock.advance(.seconds(3))
        cache.expectSync("mine-1") // sent at 3 s, never heard
        clock.advance(.seconds(1))
        cache.handle(.notice("sync:theirs-1"))
        clock.advance(.seconds(2)) // 6 s: mine-1 would have vouched until 8 s
        #expect(cache.principal(forHash: "h") == nil)
    }

    @Test func aMarkerKeepsAnEntryAliveAndNoticesStillEvict() {
        let clock = ManualClock()
        let cache = connectedCache(clock)
        for round in 1...10 { // 10 s of markers, one a second, each heard 10 ms after it was sent
            clock.advance(.milliseconds(990))
            cache.expectSync("m-\(round)")
            clock.advance(.milliseconds(10))
            cache.handle(.notice("sync:m-\(round)"))
        }
        #expect(cache.principal(forHash: "h") != nil)
        cache.handle(.notice("key:1"))
        #expect(cache.principal(forHash: "h") == nil)
    }

    @Test func confirmationsRenewAnEntryForAtMostTheMaxAgeAfterItsRead() {
        let clock = ManualClock()
        let cache = connectedCache(clock) // TTL 5 s: max age 60 s
        #expect(cache.maxAge == .seconds(60))
        for round in 1...70 { // 70 s of markers, one a second
            clock.advance(.milliseconds(990))
            cache.expectSync("m-\(round)")
            clock.advance(.milliseconds(10))
            cache.handle(.notice("sync:m-\(round)"))
            // A change no notice reports (a write that fired no trigger) lasts at most a minute.
            #expect((cache.principal(forHash: "h") != nil) == (round < 60), "at \(round) s")
        }
        #expect(LookupCache(ttlSeconds: 10).maxAge == .seconds(120))
    }

    @Test func aFlushNoticeOrAnUnknownOneDropsKeysAndPrices() {
        for payload in ["flush", "something:new"] {
            let clock = ManualClock()
            let cache = connectedCache(clock)
            cache.remember(ModelPrice(perRequest: Money(nanos: 7)), source: .configured, nextChangeMicros: nil, for: "llama3",
                           generation: cache.generation())
            cache.handle(.notice(payload))
            #expect(cache.principal(forHash: "h") == nil)
            #expect(cache.price(for: "llama3", nowMicros: 0) == nil)
        }
    }

    @Test func theListenerConfirmsTwicePerTTLWithinBounds() {
        #expect(LookupCache(ttlSeconds: 5).confirmationInterval == .milliseconds(2500))
        #expect(LookupCache(ttlSeconds: 0.1).confirmationInterval == .milliseconds(100))
        #expect(LookupCache(ttlSeconds: 600).confirmationInterval == .seconds(5))
        #expect(LookupCache(ttlSeconds: 0).confirmationInterval == nil)
    }

    @Test func aFlushDropsWhatAnUnchangedReportVouchedFor() {
        let clock = ManualClock()
        let cache = connectedCache(clock)
        clock.advance(.seconds(4))
        cache.handle(.unchanged(asOf: clock.now))
        cache.handle(.flush)
        #expect(cache.principal(forHash: "h") == nil)
        // Read again after the flush: its own TTL only, until the next unchanged report.
        cache.remember(Principal(keyId: 1, customerId: 1, revoked: true), forHash: "h", generation: cache.generation())
        clock.advance(.milliseconds(5001))
        #expect(cache.principal(forHash: "h") == nil)
    }

    @Test func aLookupSpanningAnUnchangedReportIsCachedButOneSpanningAFlushIsNot() {
        let clock = ManualClock()
        let cache = connectedCache(clock)
        let principal = Principal(keyId: 2, customerId: 2, revoked: false)
        let before = cache.generation()
        cache.handle(.unchanged(asOf: clock.now))
        cache.remember(principal, forHash: "spans-unchanged", generation: before)
        #expect(cache.principal(forHash: "spans-unchanged") == principal)
        let beforeFlush = cache.generation()
        cache.handle(.flush)
        cache.remember(principal, forHash: "spans-flush", generation: beforeFlush)
        #expect(cache.principal(forHash: "spans-flush") == nil)
    }

    @Test func unchangedReportsNeitherEnableADisconnectedCacheNorOutliveAReconnect() {
        let clock = ManualClock()
        let cache = connectedCache(clock)
        cache.handle(.disconnected)
        cache.handle(.unchanged(asOf: clock.now))
        #expect(!cache.isEnabled)
        cache.handle(.connected)
        cache.remember(Principal(keyId: 1, customerId: 1, revoked: false), forHash: "h", generation: cache.generation())
        clock.advance(.milliseconds(5001))
        #expect(cache.principal(forHash: "h") == nil)
    }
}
