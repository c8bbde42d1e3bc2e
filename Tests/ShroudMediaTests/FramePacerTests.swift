import ShroudMedia
import Testing

@Suite("Frame pacer on virtual time")
struct FramePacerTests {
    let ms: UInt64 = 1_000_000

    @Test("frame rate limits: 1 and 120 accepted, 0 and 121 refused")
    func rateLimits() throws {
        #expect(try FramePacer(framesPerSecond: FramePacer.frameRates.lowerBound).intervalNanoseconds == 1_000_000_000)
        #expect(try FramePacer(framesPerSecond: FramePacer.frameRates.upperBound).intervalNanoseconds == 8_333_333)
        #expect(throws: MediaError.self) { try FramePacer(framesPerSecond: FramePacer.frameRates.lowerBound - 1) }
        #expect(throws: MediaError.self) { try FramePacer(framesPerSecond: FramePacer.frameRates.upperBound + 1) }
    }

    @Test("the first frame is immediate, later ones on a fixed grid")
    func grid() throws {
        var pacer = try FramePacer(framesPerSecond: 25)
        #expect(pacer.wait(at: 1000 * ms) == nil)
        pacer.frameTaken(at: 1000 * ms)
        #expect(pacer.wait(at: 1000 * ms) == 40 * ms)
        #expect(pacer.wait(at: 1030 * ms) == 10 * ms)
        // Taken 5 ms late: the next one is still due on the grid, not 40 ms after.
        pacer.frameTaken(at: 1045 * ms)
        #expect(pacer.nextDue == 1080 * ms)
        #expect(pacer.wait(at: 1045 * ms) == 35 * ms)
        #expect(pacer.framesSkipped == 0)
    }

    @Test("falling a whole interval behind skips slots instead of bursting")
    func skips() throws {
        var pacer = try FramePacer(framesPerSecond: 10)
        pacer.frameTaken(at: 0)
        // Due at 100 ms, taken at 350 ms: slots 200 and 300 are gone.
        pacer.frameTaken(at: 350 * ms)
        #expect(pacer.framesSkipped == 2)
        #expect(pacer.nextDue == 450 * ms)
        #expect(pacer.wait(at: 350 * ms) == 100 * ms)
        // Exactly one interval late counts one skipped slot.
        pacer.frameTaken(at: 550 * ms)
        #expect(pacer.framesSkipped == 3)
        #expect(pacer.nextDue == 650 * ms)
    }

    @Test("a run of frames on a virtual clock keeps the frame rate")
    func virtualRun() throws {
        var pacer = try FramePacer(framesPerSecond: 25)
        let clock = VirtualClock(start: 0)
        var taken = 0
        while clock.nowNanoseconds() < 1_000_000_000 {
            if let wait = pacer.wait(at: clock.nowNanoseconds()) {
                clock.sleep(untilNanoseconds: clock.nowNanoseconds() + wait)
                continue
            }
            pacer.frameTaken(at: clock.nowNanoseconds())
            taken += 1
            clock.advance(by: 7 * ms)  // the capture itself takes 7 ms
        }
        #expect(taken == 25)
        #expect(pacer.framesSkipped == 0)
    }
}
