//go:build e2ebench

package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"testing"
)

// The tcp-relay path runs in a process of its own, so that its CPU time
// and memory are measured like moat's and Haraka's: the test binary runs
// itself with these variables set and turns into the relay.
const (
	relayListenEnv = "MOAT_BENCH_RELAY_LISTEN"
	relayTargetEnv = "MOAT_BENCH_RELAY_TARGET"
)

func TestMain(m *testing.M) {
	if listen := os.Getenv(relayListenEnv); listen != "" {
		err := runRelay(listen, os.Getenv(relayTargetEnv))
		fmt.Fprintln(os.Stderr, "tcp-relay:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// runRelay accepts connections on listen and joins each to a new
// connection to target, copying both ways until both sides are done: the
// least any proxy on the path must do. It returns only on a listener
// error; the harness kills the process.
func runRelay(listen, target string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go relay(c.(*net.TCPConn), target)
	}
}

func relay(client *net.TCPConn, target string) {
	defer client.Close()
	nc, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	upstream := nc.(*net.TCPConn)
	defer upstream.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(upstream, client)
		upstream.CloseWrite() // pass the client's FIN on
		close(done)
	}()
	io.Copy(client, upstream)
	client.CloseWrite()
	<-done
}
