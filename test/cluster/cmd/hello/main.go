// Command hello is the test cluster's workload image: a TCP server on :8080 that answers every
// connection with "hello from ADDRESS", the address the connection reached, and closes it. Two
// pods of it on two nodes show that pod traffic crosses the nodes, and whose address answered.
package main

import (
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	l, err := net.Listen("tcp", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		l.Close()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		local, _, _ := net.SplitHostPort(conn.LocalAddr().String())
		fmt.Fprintf(conn, "hello from %s", local)
		conn.Close()
	}
}
