package transport

import "net"

// SetWrapConn makes Dial wrap every new socket with f until it is called
// with nil.
func SetWrapConn(f func(net.Conn) net.Conn) { wrapConn = f }
