/// Failures of the media layer, each with a one-line reason for the user.
public enum MediaError: Error, Equatable, Sendable, CustomStringConvertible {
    case codec(String)
    case device(String)
    case file(String)

    public var description: String {
        switch self {
        case let .codec(reason), let .device(reason), let .file(reason): return reason
        }
    }
}
