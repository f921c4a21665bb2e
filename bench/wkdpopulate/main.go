// Command wkdpopulate fills a sealgate key directory with generated keys
// for the WKD benchmark (bench/wkd.sh) and writes the advanced-method WKD
// path of each to a file for the load generator.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/keydir/wkd"
)

func main() {
	dataDir := flag.String("data-dir", "", "sealgate data_dir to fill (SQLite)")
	n := flag.Int("n", 100000, "number of keys")
	domain := flag.String("domain", "example.org", "domain of the generated addresses")
	paths := flag.String("paths", "", "file to write the WKD paths to")
	flag.Parse()
	if *dataDir == "" || *paths == "" {
		flag.Usage()
		os.Exit(2)
	}
	ctx := context.Background()
	store, err := keydir.Open(ctx, "", *dataDir)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	start := time.Now()
	keys := make(chan keydir.Key, 256)
	var wg sync.WaitGroup
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < *n; i += runtime.NumCPU() {
				keys <- generate(fmt.Sprintf("user%06d@%s", i, *domain))
			}
		}(w)
	}
	go func() { wg.Wait(); close(keys) }()

	var out strings.Builder
	done := 0
	for k := range keys {
		if err := store.Put(ctx, k); err != nil {
			log.Fatal(err)
		}
		local := k.Addresses[0][:strings.IndexByte(k.Addresses[0], '@')]
		fmt.Fprintf(&out, "/.well-known/openpgpkey/%s/hu/%s\n", *domain, wkd.Hash(local))
		if done++; done%10000 == 0 {
			fmt.Fprintf(os.Stderr, "%d/%d keys (%.0fs)\n", done, *n, time.Since(start).Seconds())
		}
	}
	if err := os.WriteFile(*paths, []byte(out.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "%d keys in %.1fs\n", done, time.Since(start).Seconds())
}

func generate(address string) keydir.Key {
	e, err := openpgp.NewEntity("", "", address, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		log.Fatal(err)
	}
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		log.Fatal(err)
	}
	return keydir.Key{
		Fingerprint: strings.ToUpper(fmt.Sprintf("%x", e.PrimaryKey.Fingerprint)),
		Kind:        keydir.KindPGP,
		Data:        buf.Bytes(),
		Addresses:   []string{address},
	}
}
