import GRDB
import ShroudCrypto

/// The client's profile database (SQLite through GRDB, WAL).
public enum ProfileSchema {
    public static let version = 1
}
