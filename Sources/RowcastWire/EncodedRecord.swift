import NIOCore
import RowcastCore

/// One record, encoded once, as every client and the resume window share it.
///
/// The JSON is written into one buffer laid out as `/ws`'s `update` frame,
/// `{"event":"update","data":RECORD}`, so that `/ws` clients send the buffer as is,
/// SSE sends the slice that is the record, and Socket.IO copies that slice once into
/// its packet. The encoder notes where the record, its `row` and its `old` lie, so
/// nothing downstream scans the JSON to find them (``Framing`` cuts by these ranges;
/// filters read `row` or `old` from them).
package struct EncodedRecord: Sendable {
    /// The record without `row` and `old`, which only ``bytes`` holds: a huge row is
    /// kept once, not twice.
    package let record: ChangeRecord
    /// The cursor's text, as every framing and writer uses it.
    package let cursorText: String
    /// `{"event":"update","data":RECORD}`.
    package let bytes: ByteBuffer
    /// Where RECORD lies in ``bytes`` (offsets from its reader index).
    package let recordRange: Range<Int>
    /// Where `row`'s value lies in ``bytes``, when the record has one.
    package let rowRange: Range<Int>?
    /// Where `old`'s value lies in ``bytes``, when the record has one.
    package let oldRange: Range<Int>?

    package var cursor: Cursor { record.cursor }

    private static let prefix: StaticString = #"{"event":"update","data":"#

    package init(_ full: ChangeRecord) {
        let (row, old) = (full.row?.bytes.count ?? 0, full.old?.bytes.count ?? 0)
        var buffer = ByteBuffer()
        buffer.reserveCapacity(160 + row + old)
        let limit = ChangeRecord.largeValueBytes
        let small = (row < limit ? row : 0) + (old < limit ? old : 0)
        var writer = JSONWriter(capacity: 160 + small)
        writer.appendASCII(Self.prefix)
        var rowRange: Range<Int>?, oldRange: Range<Int>?
        full.encode(into: &writer) { writer, key, value in
            let start: Int
            if value.bytes.count >= limit {
                buffer.writeBytes(writer.bytes)
                writer.truncate(to: 0)
                start = buffer.writerIndex
                buffer.writeBytes(value.bytes)
            } else {
                start = buffer.writerIndex + writer.bytes.count
                writer.appendRaw(value.bytes)
            }
            let range = start..<start + value.bytes.count
            switch key {
            case .row: rowRange = range
            case .old: oldRange = range
            }
        }
        writer.append(byte: UInt8(ascii: "}"))
        buffer.writeBytes(writer.bytes)
        var light = full
        light.row = nil
        light.old = nil
        self.record = light
        self.cursorText = full.cursor.description
        self.bytes = buffer
        self.recordRange = Self.prefix.utf8CodeUnitCount..<buffer.readableBytes - 1
        self.rowRange = rowRange
        self.oldRange = oldRange
    }

    /// The record's JSON object alone, sharing ``bytes``' storage.
    package var json: ByteBuffer {
        bytes.getSlice(at: bytes.readerIndex + recordRange.lowerBound, length: recordRange.count) ?? ByteBuffer()
    }

    /// The frame's size, what a client's byte budget and the window's count.
    package var size: Int { bytes.readableBytes }

    /// `row` or `old` copied out of the buffer (filters read only these).
    package func value(_ key: ChangeRecord.ValueKey) -> RawJSON? {
        guard let range = key == .row ? rowRange : oldRange,
            let bytes = bytes.getBytes(at: bytes.readerIndex + range.lowerBound, length: range.count)
        else { return nil }
        return RawJSON(trusted: bytes)
    }

    /// The record with its `row` and `old`, copied out of the buffer.
    package var full: ChangeRecord {
        var full = record
        full.row = value(.row)
        full.old = value(.old)
        return full
    }

    /// The record as subscriptions match it. A filter or a row rule reads a column of
    /// `row` or `old`, so only a subscription with one needs them copied out of the buffer.
    package func values(for subscription: Subscription) -> RecordValues {
        let table = record.schema.flatMap { schema in record.table.map { TableName(schema: schema, name: $0) } }
        guard subscription.readsValues(of: table) else { return RecordValues(record) }
        return RecordValues(full)
    }

    /// What `subscription` gets of this record.
    package func verdict(_ subscription: Subscription) -> Subscription.Verdict {
        var values = values(for: subscription)
        return subscription.verdict(&values)
    }

    /// Whether `subscription` gets anything of this record.
    package func matches(_ subscription: Subscription) -> Bool {
        verdict(subscription) != .skip
    }

    /// The record as a client gets it that `verdict` says gets it moved out of its view
    /// or into it (encoded again: only replays and the live path's first such client
    /// build one).
    package func moved(_ verdict: Subscription.Verdict) -> EncodedRecord {
        switch verdict {
        case .leave: EncodedRecord(full.leavingView)
        case .enter: EncodedRecord(full.enteringView)
        case .send, .skip: self
        }
    }
}
