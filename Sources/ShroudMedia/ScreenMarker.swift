/// A 32-bit number painted on a shared screen in big black and white cells, and read back from
/// decoded video frames: the glass-to-glass probe (issue 6, benchmark). The sender's screen shows
/// a changing value (a frame counter or a millisecond clock); the watcher reads it from each
/// decoded picture and knows which screen it is looking at.
///
/// Layout: a grid of `columns` × `rows` square cells, one cell away from the top-left corner.
/// The cell side is the picture height / `cellsPerHeight`, so the same layout read from a
/// downscaled layer lands on the same cells (49 px at 1080p, 16 px at 360p — far larger than VP8's
/// 4×4 transform, so block artefacts cannot flip a cell).
///
///     row 0: sync  1 0 1 0 1 0 1 0   (1 = white; gives the reader its black and white levels)
///     rows 1–4: the value, 32 bits, most significant first, row by row
///     row 5: CRC-8 (polynomial 0x07) of the value's 4 big-endian bytes
///
/// The reader averages the middle half of each cell's luma (edges ring after compression) and
/// refuses a picture whose sync row lacks contrast or whose CRC does not match: a value is either
/// read right or not at all.
public enum ScreenMarker {
    public static let columns = 8
    public static let rows = 6
    /// Picture height in cells: 22 gives 49 px cells at 1080p and 16 px at 360p.
    public static let cellsPerHeight = 22
    /// The sync row's white and black averages must differ by this much (of 219 in limited-range
    /// luma), or the picture does not show a marker.
    public static let minimumContrast = 60
    static let white: UInt8 = 235
    static let black: UInt8 = 16

    /// The cell values (true = white) for `value`, row by row.
    public static func cells(for value: UInt32) -> [Bool] {
        var cells: [Bool] = (0 ..< columns).map { $0 % 2 == 0 }
        for bit in (0 ..< 32).reversed() { cells.append(value >> UInt32(bit) & 1 == 1) }
        let crc = crc8(value)
        for bit in (0 ..< 8).reversed() { cells.append(crc >> UInt8(bit) & 1 == 1) }
        return cells
    }

    /// CRC-8, polynomial x⁸ + x² + x + 1 (0x07), initial value 0, over the big-endian bytes.
    static func crc8(_ value: UInt32) -> UInt8 {
        var crc: UInt8 = 0
        for shift in [24, 16, 8, 0] {
            crc ^= UInt8(truncatingIfNeeded: value >> UInt32(shift))
            for _ in 0 ..< 8 { crc = crc & 0x80 != 0 ? (crc << 1) ^ 0x07 : crc << 1 }
        }
        return crc
    }

    /// The pixel rectangle of cell (column, row) in a picture `height` pixels tall.
    static func cellRect(column: Int, row: Int, pictureHeight height: Int) -> (x0: Int, y0: Int, x1: Int, y1: Int) {
        let side = Double(height) / Double(cellsPerHeight)
        func edge(_ n: Int) -> Int { Int((Double(n) * side).rounded()) }
        return (edge(column + 1), edge(row + 1), edge(column + 2), edge(row + 2))
    }

    /// The marker's size in pixels on a screen `height` pixels tall (for painting it on X).
    public static func size(screenHeight height: Int) -> PixelSize {
        let last = cellRect(column: columns - 1, row: rows - 1, pictureHeight: height)
        let first = cellRect(column: 0, row: 0, pictureHeight: height)
        return PixelSize(width: last.x1 - first.x0, height: last.y1 - first.y0)
    }

    /// Where the marker starts on a screen `height` pixels tall.
    public static func origin(screenHeight height: Int) -> (x: Int, y: Int) {
        let first = cellRect(column: 0, row: 0, pictureHeight: height)
        return (first.x0, first.y0)
    }

    /// The marker as tightly packed BGRX pixels, to put at `origin(screenHeight:)` of a screen
    /// `height` pixels tall.
    public static func bgraImage(value: UInt32, screenHeight height: Int) -> (pixels: [UInt8], size: PixelSize) {
        let size = size(screenHeight: height)
        let origin = origin(screenHeight: height)
        var pixels = [UInt8](repeating: 0, count: size.width * size.height * 4)
        for (index, isWhite) in cells(for: value).enumerated() where isWhite {
            let rect = cellRect(column: index % columns, row: index / columns, pictureHeight: height)
            for y in rect.y0 ..< rect.y1 {
                let row = (y - origin.y) * size.width * 4
                for x in rect.x0 ..< rect.x1 {
                    let at = row + (x - origin.x) * 4
                    pixels[at] = 255; pixels[at + 1] = 255; pixels[at + 2] = 255; pixels[at + 3] = 255
                }
            }
        }
        return (pixels, size)
    }

    /// Paints the marker into an I420 picture (luma black/white, chroma neutral).
    public static func paint(_ value: UInt32, into picture: inout I420Frame) throws {
        let size = size(screenHeight: picture.height)
        let origin = origin(screenHeight: picture.height)
        guard origin.x + size.width <= picture.width, origin.y + size.height <= picture.height else {
            throw MediaError.codec("a \(picture.width)x\(picture.height) picture is too small for the marker")
        }
        for (index, isWhite) in cells(for: value).enumerated() {
            let rect = cellRect(column: index % columns, row: index / columns, pictureHeight: picture.height)
            for y in rect.y0 ..< rect.y1 {
                for x in rect.x0 ..< rect.x1 { picture.y[y * picture.width + x] = isWhite ? white : black }
            }
            for y in rect.y0 / 2 ..< (rect.y1 + 1) / 2 {
                for x in rect.x0 / 2 ..< (rect.x1 + 1) / 2 {
                    picture.u[y * picture.chromaWidth + x] = 128
                    picture.v[y * picture.chromaWidth + x] = 128
                }
            }
        }
    }

    /// The value shown in `picture`, or nil when it shows no readable marker.
    public static func read(_ picture: I420Frame) -> UInt32? {
        let size = size(screenHeight: picture.height)
        let origin = origin(screenHeight: picture.height)
        guard origin.x + size.width <= picture.width, origin.y + size.height <= picture.height,
              picture.y.count == picture.width * picture.height else { return nil }
        var levels: [Int] = []
        levels.reserveCapacity(columns * rows)
        for index in 0 ..< columns * rows {
            let rect = cellRect(column: index % columns, row: index / columns, pictureHeight: picture.height)
            // The middle half of the cell.
            let insetX = (rect.x1 - rect.x0) / 4, insetY = (rect.y1 - rect.y0) / 4
            var sum = 0, count = 0
            for y in rect.y0 + insetY ..< rect.y1 - insetY {
                for x in rect.x0 + insetX ..< rect.x1 - insetX {
                    sum += Int(picture.y[y * picture.width + x])
                    count += 1
                }
            }
            levels.append(count > 0 ? sum / count : 0)
        }
        let whites = stride(from: 0, to: columns, by: 2).map { levels[$0] }
        let blacks = stride(from: 1, to: columns, by: 2).map { levels[$0] }
        guard let darkestWhite = whites.min(), let brightestBlack = blacks.max(),
              darkestWhite - brightestBlack >= minimumContrast else { return nil }
        let threshold = (darkestWhite + brightestBlack) / 2
        var value: UInt32 = 0
        for index in columns ..< columns + 32 { value = value << 1 | (levels[index] > threshold ? 1 : 0) }
        var crc: UInt8 = 0
        for index in columns + 32 ..< columns * rows { crc = crc << 1 | (levels[index] > threshold ? 1 : 0) }
        return crc == crc8(value) ? value : nil
    }
}
