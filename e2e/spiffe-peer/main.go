// spiffe-peer: the e2e tests' SPIFFE workload, built on go-spiffe (the SPIFFE project's own Go library,
// used unchanged): it gets its X.509-SVID and bundles from the Workload API at SPIFFE_ENDPOINT_SOCKET and
// speaks mTLS that authorizes the peer by SPIFFE ID. Nothing here parses SVIDs or checks chains itself.
//
//	spiffe-peer serve -addr :8443 -allow spiffe://east.skein/ns/default/sa/default
//	spiffe-peer get -url https://10.2.1.5:8443/ -server spiffe://west.skein/ns/default/sa/default [-count N -interval 5s] [-for 60s -stop-file F -fresh]
package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func source(ctx context.Context) *workloadapi.X509Source {
	src, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "spiffe-peer: workload API: %v\n", err)
		os.Exit(3)
	}
	return src
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", ":8443", "listen address")
	allow := fs.String("allow", "", "the SPIFFE ID a client must have")
	_ = fs.Parse(args)
	src := source(context.Background())
	cfg := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(*allow)))
	srv := &http.Server{Addr: *addr, TLSConfig: cfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		svid, _ := src.GetX509SVID()
		peer, _ := spiffeidFromState(r.TLS)
		_ = json.NewEncoder(w).Encode(map[string]string{"server": svid.ID.String(), "client": peer, "serverSerial": svid.Certificates[0].SerialNumber.String()})
	})}
	fmt.Printf("serving on %s for %s\n", *addr, *allow)
	if err := srv.ListenAndServeTLS("", ""); err != nil {
		fmt.Fprintf(os.Stderr, "spiffe-peer: %v\n", err)
		os.Exit(1)
	}
}

func spiffeidFromState(st *tls.ConnectionState) (string, error) {
	if st == nil || len(st.PeerCertificates) == 0 || len(st.PeerCertificates[0].URIs) == 0 {
		return "", fmt.Errorf("no peer certificate")
	}
	return st.PeerCertificates[0].URIs[0].String(), nil
}

// get prints one JSON line per request: the answer (and the key ID of the CA that signed the server's SVID),
// or the error; over one keep-alive connection, or with -fresh a new TLS handshake per request (each one
// verifies the server's SVID as it is then against the bundle as it is then). -for keeps going that long
// (at most -count requests), -stop-file until that file exists.
func get(args []string) {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	url := fs.String("url", "", "https URL of the server")
	server := fs.String("server", "", "the SPIFFE ID the server must have")
	count := fs.Int("count", 1, "requests")
	interval := fs.Duration("interval", 0, "pause between requests")
	duration := fs.Duration("for", 0, "keep requesting this long (bounded by -count)")
	fresh := fs.Bool("fresh", false, "a new connection (TLS handshake) per request")
	stopFile := fs.String("stop-file", "", "stop once this file exists")
	_ = fs.Parse(args)
	src := source(context.Background())
	cfg := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(*server)))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: *fresh}, Timeout: 5 * time.Second}
	failed := false
	until := time.Now().Add(*duration)
	stopped := func() bool {
		if *stopFile == "" {
			return false
		}
		_, err := os.Stat(*stopFile)
		return err == nil
	}
	for i := 0; i < *count && (i == 0 || *duration == 0 || time.Now().Before(until)) && !stopped(); i++ {
		if i > 0 {
			time.Sleep(*interval)
		}
		svid, _ := src.GetX509SVID()
		out := map[string]any{"seq": i, "clientSerial": svid.Certificates[0].SerialNumber.String()}
		resp, err := client.Get(*url)
		if err != nil {
			out["error"] = err.Error()
			failed = true
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
				out["serverCaKeyId"] = hex.EncodeToString(resp.TLS.PeerCertificates[0].AuthorityKeyId)
			}
			var answer map[string]string
			_ = json.Unmarshal(body, &answer)
			out["answer"] = answer
		}
		line, _ := json.Marshal(out)
		fmt.Println(string(line))
	}
	if failed {
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: spiffe-peer serve|get [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "get":
		get(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "spiffe-peer: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
