package transfer

import (
	"io"
	"sync"
)

// Splice copies a to b and b to a until either side ends, then closes
// both: a byte stream forwarded whole, each way.
func Splice(a, b io.ReadWriteCloser) {
	var once sync.Once
	end := func() {
		once.Do(func() {
			a.Close()
			b.Close()
		})
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(a, b); end(); done <- struct{}{} }()
	go func() { io.Copy(b, a); end(); done <- struct{}{} }()
	<-done
	<-done
}
