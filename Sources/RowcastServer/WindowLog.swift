import Foundation
import Glibc
import RowcastCore
import Synchronization

/// `serve`'s resume window on disk, so that the replication slot confirms what rowcast
/// has kept instead of trailing the window (which held back all of the database's WAL
/// for the window's age).
///
/// An append-only log in segment files (`<sequence>.seg`) in a directory of its own.
/// Each entry is a 32-bit length, the CRC-32C of its payload, and the payload: a
/// header (first in every segment: whose log this is, the cursor before the segment's
/// first record, the position kept when it began), a record (the time the window took
/// it and the record, ``ChangeRecord/appendBinary(to:)``) or a mark (a WAL position
/// every record before which is in the log). A segment is deleted once the window has
/// let go of all its records, so the disk it takes is about the window's bytes and
/// one segment more.
///
/// The slot may confirm a position only once a mark at or past it is durable
/// (``sync()``), so a log that lost its tail (a crash of the machine with
/// `--window-fsync never`, a restored disk) ends before the slot's position, and is
/// then discarded: the window starts empty and says so, never with a gap.
///
/// Reading at start cuts a torn tail (an entry half written when the process died).
/// Used from the capture's thread; every method takes the log's lock.
package final class WindowLog: Sendable {
    /// When the log is flushed to the disk (`--window-fsync`).
    package enum SyncPolicy: String, Sendable, CaseIterable {
        /// Before the slot may confirm what was written: survives the machine crashing.
        case always
        /// At most once a second; the slot confirms only what was synced.
        case second
        /// Never: survives `serve` crashing, not the machine (whose crash then costs
        /// the window, never a wrong one: see ``WindowLog``).
        case never
    }

    /// What the log held when it was opened.
    package struct Loaded {
        /// Every whole record, oldest first, with the wall-clock time (milliseconds
        /// since 1970) the window took it.
        package var records: [(record: ChangeRecord, at: Int64)] = []
        /// The cursor before the first record: everything after it is in `records`.
        package var origin: Cursor?
        /// The highest WAL position marked: every record before it is in `records`.
        package var kept: UInt64 = 0
        /// Whether there was a log at all.
        package var found = false
        /// What was cut or dropped, for the log (one line each).
        package var repairs: [String] = []
    }

    private enum EntryType: UInt8 {
        case header = 1
        case record = 2
        case mark = 3
    }

    private struct Segment {
        let sequence: UInt64
        var path: String
        /// The cursor of the newest record in it (nil: none).
        var lastCursor: Cursor?
        var bytes: Int
    }

    private struct State {
        var segments: [Segment] = []
        var fd: Int32 = -1
        /// Entries not yet written to the file.
        var pending: [UInt8] = []
        /// The newest record appended, and the newest position marked.
        var appended: Cursor?
        var marked: UInt64 = 0
        /// What was written (and, after a sync, what is durable).
        var written: (cursor: Cursor?, mark: UInt64) = (nil, 0)
        var durable: (cursor: Cursor?, mark: UInt64) = (nil, 0)
        var dirty = false
        var lastSync: ContinuousClock.Instant?
        /// Set once a write failed: the log is given up (see ``failure``).
        package var failure: String?
    }

    package let directory: String
    package let policy: SyncPolicy
    private let identity: String
    private let segmentBytes: Int
    private let lockFD: Int32
    private let lockClosed = Atomic<Bool>(false)
    private let state = Mutex(State())

    /// Opens (creating) the log in `directory`, reads what it holds, cuts a torn tail,
    /// and starts a new segment. `identity` names the database and slot: a log made for
    /// another is discarded.
    package static func open(
        directory: String, identity: String, policy: SyncPolicy, segmentBytes: Int = 16 << 20
    ) throws(WindowLogError) -> (WindowLog, Loaded) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .cannotUse(directory, "cannot create it: \(error.localizedDescription)")
        }
        let lockFD = Glibc.open(directory + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else { throw .cannotUse(directory, String(cString: strerror(errno))) }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(lockFD)
            throw .inUse(directory)
        }
        let log = WindowLog(directory: directory, identity: identity, policy: policy, segmentBytes: segmentBytes, lockFD: lockFD)
        let loaded: Loaded
        do throws(WindowLogError) {
            loaded = try log.load()
        } catch {
            log.closeFiles()
            throw error
        }
        return (log, loaded)
    }

    private init(directory: String, identity: String, policy: SyncPolicy, segmentBytes: Int, lockFD: Int32) {
        self.directory = directory
        self.identity = identity
        self.policy = policy
        self.segmentBytes = max(segmentBytes, 4096)
        self.lockFD = lockFD
    }

    deinit { closeFiles() }

    private func closeFiles() {
        state.withLock { state in
            if state.fd >= 0 { Glibc.close(state.fd) }
            state.fd = -1
        }
        // Once: a second close could close whatever file took the number since.
        if !lockClosed.exchange(true, ordering: .relaxed) { Glibc.close(lockFD) }
    }

    // MARK: - Reading at start

    private func segmentFiles() -> [(UInt64, String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> (UInt64, String)? in
            guard name.hasSuffix(".seg"), let sequence = UInt64(name.dropLast(4), radix: 16) else { return nil }
            return (sequence, directory + "/" + name)
        }.sorted { $0.0 < $1.0 }
    }

    private func load() throws(WindowLogError) -> Loaded {
        var loaded = Loaded()
        var segments: [Segment] = []
        let files = segmentFiles()
        loaded.found = !files.isEmpty
        var broken = false
        for (position, (sequence, path)) in files.enumerated() {
            if broken {
                unlink(path)
                continue
            }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw .cannotUse(directory, "cannot read \(path)")
            }
            let bytes = [UInt8](data)
            var offset = 0
            var segment = Segment(sequence: sequence, path: path, lastCursor: nil, bytes: bytes.count)
            var sawHeader = false
            var gap = false
            entries: while offset < bytes.count {
                guard let (type, payload, next) = Self.entry(in: bytes, at: offset) else { break entries }
                switch type {
                case .header:
                    guard !sawHeader, let header = Self.header(payload), header.identity == identity else {
                        // Another database's or slot's log (or a second header): none of it is ours.
                        return discardAll(loaded: loaded, because: "it was made for another cluster, timeline (a failover or a restore), database or slot")
                    }
                    // The oldest segment kept says where the log begins; each later one must
                    // begin where the one before ended (a segment missing between is a gap).
                    if segments.isEmpty {
                        loaded.origin = header.origin
                    } else if header.origin != (loaded.records.last?.record.cursor ?? loaded.origin) {
                        gap = true
                        break entries
                    }
                    sawHeader = true
                    loaded.kept = max(loaded.kept, header.kept)
                case .record:
                    var reader = BinaryReader(payload)
                    guard sawHeader, let at = reader.uint64(), let record = ChangeRecord(binary: payload.dropFirst(8)) else { break entries }
                    if let last = loaded.records.last?.record.cursor, record.cursor <= last { break entries }
                    loaded.records.append((record, Int64(bitPattern: at)))
                    segment.lastCursor = record.cursor
                case .mark:
                    var reader = BinaryReader(payload)
                    guard sawHeader, let mark = reader.uint64() else { break entries }
                    loaded.kept = max(loaded.kept, mark)
                }
                offset = next
            }
            if offset < bytes.count {
                // A torn or damaged entry: everything from it on is cut.
                truncate(path, off_t(offset))
                segment.bytes = offset
                let last = position == files.count - 1
                loaded.repairs.append(
                    gap
                        ? "\(path) does not continue the segment before it (one is missing): the log ends before it"
                        : last
                        ? "cut a torn tail of \(bytes.count - offset) bytes from \(path) (an entry half written when serve stopped)"
                        : "cut \(path) at byte \(offset) of \(bytes.count) (a damaged entry) and dropped the \(files.count - position - 1) segments after it"
                )
                broken = !last
            }
            if !sawHeader {
                unlink(path)
                continue
            }
            segments.append(segment)
        }
        state.withLock { state in
            state.segments = segments
            state.appended = loaded.records.last?.record.cursor ?? loaded.origin
            state.marked = loaded.kept
            state.written = (state.appended, loaded.kept)
            state.durable = state.written
        }
        return loaded
    }

    private func discardAll(loaded: Loaded, because reason: String) -> Loaded {
        for (_, path) in segmentFiles() { unlink(path) }
        var fresh = Loaded()
        fresh.found = loaded.found
        fresh.repairs = ["discarded the window log in \(directory): \(reason)"]
        return fresh
    }

    /// Forgets everything the log holds and starts again after `origin` (the slot's
    /// position): what was loaded cannot be trusted to have no gap before it.
    package func reset(origin: Cursor?) {
        state.withLock { state in
            if state.fd >= 0 { Glibc.close(state.fd) }
            state.fd = -1
            for segment in state.segments { unlink(segment.path) }
            state.segments = []
            state.pending = []
            state.appended = origin
            state.marked = 0
            state.written = (origin, 0)
            state.durable = (origin, 0)
        }
    }

    private static func entry(in bytes: [UInt8], at offset: Int) -> (EntryType, ArraySlice<UInt8>, Int)? {
        guard bytes.count - offset >= 9 else { return nil }
        var reader = BinaryReader(bytes[offset..<offset + 8])
        guard let length = reader.uint32(), let crc = reader.uint32(), length >= 1, Int(length) <= bytes.count - offset - 8 else { return nil }
        let body = bytes[(offset + 8)..<(offset + 8 + Int(length))]
        guard CRC32C.checksum(body) == crc, let type = EntryType(rawValue: body[body.startIndex]) else { return nil }
        return (type, body.dropFirst(), offset + 8 + Int(length))
    }

    private static func header(_ payload: ArraySlice<UInt8>) -> (identity: String, origin: Cursor?, kept: UInt64)? {
        var reader = BinaryReader(payload)
        guard let magic = reader.lengthPrefixed(), Array(magic) == Array("rowcast window log 1".utf8),
            let identity = reader.lengthPrefixed(), let hasOrigin = reader.byte(), let kept = reader.uint64()
        else { return nil }
        var origin: Cursor?
        if hasOrigin == 1 {
            guard let text = reader.lengthPrefixed(), let cursor = Cursor(String(decoding: text, as: UTF8.self)) else { return nil }
            origin = cursor
        }
        return (String(decoding: identity, as: UTF8.self), origin, kept)
    }

    // MARK: - Writing

    private static func appendEntry(_ type: EntryType, to bytes: inout [UInt8], body: (inout [UInt8]) -> Void) {
        let start = bytes.count
        bytes.append(contentsOf: [0, 0, 0, 0, 0, 0, 0, 0, type.rawValue])
        body(&bytes)
        let length = UInt32(clamping: bytes.count - start - 8)
        let crc = bytes[(start + 8)...].withUnsafeBytes { CRC32C.checksum($0) }
        for shift in 0..<4 {
            bytes[start + shift] = UInt8(truncatingIfNeeded: length >> (8 * UInt32(shift)))
            bytes[start + 4 + shift] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(shift)))
        }
    }

    private static func appendBytes(_ value: some Collection<UInt8>, to bytes: inout [UInt8]) {
        let count = UInt32(clamping: value.count)
        for shift in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: count >> (8 * UInt32(shift)))) }
        bytes.append(contentsOf: value)
    }

    private static func appendUInt64(_ value: UInt64, to bytes: inout [UInt8]) {
        for shift in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(shift)))) }
    }

    /// Appends a record the window took at `at` (milliseconds since 1970); written with
    /// the next ``sync()`` or once a megabyte is waiting.
    package func append(_ record: ChangeRecord, at: Int64) {
        state.withLock { state in
            guard state.failure == nil else { return }
            Self.appendEntry(.record, to: &state.pending) { bytes in
                Self.appendUInt64(UInt64(bitPattern: at), to: &bytes)
                record.appendBinary(to: &bytes)
            }
            state.appended = record.cursor
            if state.pending.count >= 1 << 20 { writePending(&state) }
        }
    }

    /// Notes that every record before WAL `position` was appended.
    package func mark(_ position: UInt64) {
        state.withLock { state in
            guard state.failure == nil, position > state.marked else { return }
            Self.appendEntry(.mark, to: &state.pending) { Self.appendUInt64(position, to: &$0) }
            state.marked = position
        }
    }

    /// Writes what waits and flushes it to the disk as the policy says. Returns what is
    /// durable now: the newest record and the highest mark (nil once the log failed).
    package func sync(now: ContinuousClock.Instant = .now) -> (cursor: Cursor?, mark: UInt64)? {
        state.withLock { state in
            guard state.failure == nil else { return nil }
            writePending(&state)
            guard state.failure == nil else { return nil }
            switch policy {
            case .never:
                state.durable = state.written
            case .always, .second:
                guard state.dirty else { break }
                if policy == .second, let last = state.lastSync, now - last < .seconds(1) { break }
                guard fdatasync(state.fd) == 0 else {
                    fail(&state, "cannot flush it to the disk: \(String(cString: strerror(errno)))")
                    return nil
                }
                state.dirty = false
                state.lastSync = now
                state.durable = state.written
            }
            return state.durable
        }
    }

    /// Why the log was given up, if it was (a write or flush failed: a full disk).
    package var failure: String? { state.withLock { $0.failure } }

    /// Deletes the oldest segments whose every record the window let go (`through`).
    package func release(through cursor: Cursor?) {
        guard let cursor else { return }
        state.withLock { state in
            while state.segments.count > 1, let first = state.segments.first, first.lastCursor.map({ $0 <= cursor }) ?? true {
                unlink(first.path)
                state.segments.removeFirst()
            }
        }
    }

    /// Bytes of segment files, and how many there are.
    package var diskUsage: (bytes: Int, segments: Int) {
        state.withLock { state in (state.segments.reduce(0) { $0 + $1.bytes }, state.segments.count) }
    }

    private func writePending(_ state: inout State) {
        if state.fd < 0 || state.segments.last.map({ $0.bytes >= segmentBytes }) == true {
            guard startSegment(&state) else { return }
        }
        var written = 0
        let count = state.pending.count
        while written < count {
            let result = state.pending.withUnsafeBytes { Glibc.write(state.fd, $0.baseAddress! + written, count - written) }
            if result < 0 {
                if errno == EINTR { continue }
                fail(&state, "cannot write to it: \(String(cString: strerror(errno)))")
                return
            }
            written += result
        }
        if count > 0 {
            state.segments[state.segments.count - 1].bytes += count
            if let appended = state.appended, state.written.cursor != appended {
                state.segments[state.segments.count - 1].lastCursor = appended
            }
            state.written = (state.appended, state.marked)
            state.dirty = true
        }
        state.pending.removeAll(keepingCapacity: state.pending.capacity <= 4 << 20)
    }

    /// Closes the current segment (flushed first, so that no mark in the next can be
    /// durable before the records it vouches for) and opens the next with its header.
    private func startSegment(_ state: inout State) -> Bool {
        if state.fd >= 0 {
            if policy != .never, state.dirty, fdatasync(state.fd) != 0 {
                fail(&state, "cannot flush it to the disk: \(String(cString: strerror(errno)))")
                return false
            }
            state.durable = state.written
            state.dirty = false
            Glibc.close(state.fd)
            state.fd = -1
        }
        let sequence = (state.segments.last?.sequence ?? 0) + 1
        let path = directory + "/" + String(sequence, radix: 16).leftPadded(to: 16) + ".seg"
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            fail(&state, "cannot create \(path): \(String(cString: strerror(errno)))")
            return false
        }
        var header: [UInt8] = []
        // The records written so far are before this segment; the pending ones are in it.
        let origin = state.written.cursor
        Self.appendEntry(.header, to: &header) { bytes in
            Self.appendBytes("rowcast window log 1".utf8, to: &bytes)
            Self.appendBytes(identity.utf8, to: &bytes)
            bytes.append(origin == nil ? 0 : 1)
            Self.appendUInt64(state.written.mark, to: &bytes)
            if let origin { Self.appendBytes(origin.description.utf8, to: &bytes) }
        }
        state.pending.insert(contentsOf: header, at: 0)
        state.fd = fd
        state.segments.append(Segment(sequence: sequence, path: path, lastCursor: nil, bytes: 0))
        if policy != .never {
            let directoryFD = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if directoryFD >= 0 {
                fsync(directoryFD)
                Glibc.close(directoryFD)
            }
        }
        return true
    }

    private func fail(_ state: inout State, _ reason: String) {
        state.failure = "the window log in \(directory) failed: \(reason)"
        state.pending = []
    }
}

/// Why the window log cannot be used at start (the user's to fix).
package enum WindowLogError: Error, CustomStringConvertible {
    case cannotUse(String, String)
    case inUse(String)

    package var description: String {
        switch self {
        case .cannotUse(let directory, let why):
            "cannot use the window log in \(directory): \(why) (fix: choose a writable directory with --window-dir)"
        case .inUse(let directory):
            "the window log in \(directory) is in use by another rowcast serve (fix: give each serve its own --window-dir, or its own --slot)"
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// A window log ready for ``buildApplication(options:source:services:onServerRunning:window:logger:)``:
/// the log, the records it restores, and the cursor before them.
package struct OpenedWindowLog: Sendable {
    package let log: WindowLog
    package let restored: [(record: ChangeRecord, at: Int64)]
    package let origin: Cursor?
    /// Cursors before it missed changes: the slot was lost and made again at start.
    package let lostBefore: Cursor?

    /// What the slot is at start, for the checks of ``open(directory:identity:policy:slot:captures:say:)``.
    package struct Slot: Sendable {
        /// Its confirmed position, and a cursor just before it.
        package var confirmed: UInt64
        package var origin: Cursor
        /// It did not exist before this start.
        package var isNew = false
        /// It was lost and made again at this start (`--on-slot-lost recreate`).
        package var recreated = false
        /// The server's WAL position now.
        package var serverWAL: UInt64 = .max

        package init(confirmed: UInt64, origin: Cursor, isNew: Bool = false, recreated: Bool = false, serverWAL: UInt64 = .max) {
            self.confirmed = confirmed
            self.origin = origin
            self.isNew = isNew
            self.recreated = recreated
            self.serverWAL = serverWAL
        }
    }

    /// Opens the log for the stream `identity` (``WindowLog/open(directory:identity:policy:segmentBytes:)``)
    /// and checks it against the slot. It is discarded, and the window starts empty after
    /// the slot's position, when it may not be this stream's past: the slot was made
    /// just now (a failover to a standby without it, a slot dropped and made again), the
    /// log is ahead of the server (a restore), or it ends before the slot's confirmed
    /// position (records may be missing: a machine crash with `never`, a lost or
    /// restored disk). Restored records of tables no longer captured (`captures`) are
    /// left out. `say` gets a line for each repair (`true`: a warning).
    package static func open(
        directory: String, identity: String, policy: WindowLog.SyncPolicy, slot: Slot, captures: (ChangeRecord) -> Bool = { _ in true },
        say: (String, Bool) -> Void
    ) throws(WindowLogError) -> OpenedWindowLog {
        let (log, loaded) = try WindowLog.open(directory: directory, identity: identity, policy: policy)
        for line in loaded.repairs { say(line, true) }
        let lostBefore = slot.recreated ? slot.origin : nil
        let holds = loaded.origin != nil || !loaded.records.isEmpty
        let problem: String? =
            if !loaded.found || !holds { nil }
            else if slot.isNew || slot.recreated { "the slot was made just now, so nothing in it continues the log (a failover, or a slot dropped and made again)" }
            else if loaded.kept > slot.serverWAL {
                "it reaches \(formatLSN(loaded.kept)), past the server's WAL end \(formatLSN(slot.serverWAL)) (the database was restored or failed over)"
            } else if loaded.kept < slot.confirmed {
                "it ends before the slot's confirmed position \(formatLSN(slot.confirmed)) (kept \(formatLSN(loaded.kept))), so records may be missing from it"
            } else { nil }
        if loaded.found, holds, problem == nil {
            let restored = loaded.records.filter { captures($0.record) }
            return OpenedWindowLog(log: log, restored: restored, origin: loaded.origin ?? slot.origin, lostBefore: lostBefore)
        }
        if let problem {
            say("discarded the window log in \(directory): \(problem); the resume window starts empty at the slot's position and older cursors get cursor_expired", true)
        } else if slot.confirmed > 0, !slot.isNew {
            say("no window log in \(directory): the resume window starts empty at the slot's position \(formatLSN(slot.confirmed)); older cursors get cursor_expired", false)
        }
        log.reset(origin: slot.origin)
        return OpenedWindowLog(log: log, restored: [], origin: slot.origin, lostBefore: lostBefore)
    }
}
