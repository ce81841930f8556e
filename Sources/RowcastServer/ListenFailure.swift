#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Why the server could not listen, in one line with the fix, instead of the socket
/// layer's own text (`bind(descriptor:ptr:bytes:): Address already in use) (errno: 98)`).
package func listenFailure(_ error: any Error, host: String, port: Int) -> String {
    let errno = (error as? IOError)?.errnoCode
    switch errno {
    case EADDRINUSE?:
        return "port \(port) on \(host) is already in use (fix: choose another --port, or stop what is using it)"
    case EACCES?:
        return "not allowed to listen on port \(port) (fix: ports below 1024 need privileges; choose --port 1024 or above)"
    case EADDRNOTAVAIL?:
        return "\(host) is not an address of this machine (fix: --host 127.0.0.1, 0.0.0.0, or one of this machine's addresses)"
    default:
        return "cannot serve on \(host):\(port): \(error) (fix: check --host and --port)"
    }
}
