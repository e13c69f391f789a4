package images

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// ctrClient runs containerd's ctr client against one containerd, in the CRI namespace.
type ctrClient struct {
	Path    string // the ctr binary
	Address string // containerd's socket; empty means ctr's default
}

func (c ctrClient) run(ctx context.Context, args ...string) ([]byte, error) {
	full := []string{}
	if c.Address != "" {
		full = append(full, "--address", c.Address)
	}
	full = append(full, "--namespace", Namespace)
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, c.Path, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Import imports the docker-style tarball at tarPath into containerd's CRI namespace (k8s.io),
// unpacked, under the names the tarball is tagged with.
func Import(ctx context.Context, ctrPath, address, tarPath string) error {
	_, err := ctrClient{Path: ctrPath, Address: address}.run(ctx, "images", "import", tarPath)
	return err
}

// List returns the images containerd holds in the CRI namespace: reference → manifest digest.
func List(ctx context.Context, ctrPath, address string) (map[string]string, error) {
	out, err := ctrClient{Path: ctrPath, Address: address}.run(ctx, "images", "ls")
	if err != nil {
		return nil, err
	}
	return parseList(out), nil
}

// parseList reads `ctr images ls`: a header, then "REF TYPE DIGEST SIZE PLATFORMS LABELS" rows.
func parseList(out []byte) map[string]string {
	imgs := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	first := true
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if first {
			first = false
			if len(f) > 0 && f[0] == "REF" {
				continue
			}
		}
		if len(f) >= 3 && strings.HasPrefix(f[2], "sha256:") {
			imgs[f[0]] = f[2]
		}
	}
	return imgs
}

// Tag gives the image src a second name dst (replacing any image named dst).
func Tag(ctx context.Context, ctrPath, address, src, dst string) error {
	_, err := ctrClient{Path: ctrPath, Address: address}.run(ctx, "images", "tag", "--force", src, dst)
	return err
}

// ImportAll imports every built ref (Skipped ones are ignored), except those containerd already holds
// with the digest it gave them at their last import of the same tarball. It writes one line per
// image to out (nil discards).
func ImportAll(ctx context.Context, ctrPath, address string, refs []ImageRef, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	have, err := List(ctx, ctrPath, address)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if r.Skipped != "" {
			fmt.Fprintf(out, "images: %-45s skipped: %s\n", r.Name, r.Skipped)
			continue
		}
		metaPath := strings.TrimSuffix(r.Tarball, ".tar") + ".json"
		m, merr := readMeta(metaPath)
		// containerd rebuilds the manifest of a docker-style archive, so its digest is not the one
		// computed here: compare with what it reported after the last import of this content.
		if merr == nil && m.Digest == r.Digest && m.CtrDigest != "" && have[r.Name] == m.CtrDigest {
			fmt.Fprintf(out, "images: %-45s already imported\n", r.Name)
			continue
		}
		start := time.Now()
		if err := Import(ctx, ctrPath, address, r.Tarball); err != nil {
			return err
		}
		now, err := List(ctx, ctrPath, address)
		if err != nil {
			return err
		}
		got, ok := now[r.Name]
		if !ok {
			return fmt.Errorf("image %s: not listed by containerd after importing %s", r.Name, r.Tarball)
		}
		if merr == nil && m.Digest == r.Digest {
			m.CtrDigest = got
			if data, err := json.Marshal(m); err == nil {
				_ = os.WriteFile(metaPath, data, 0o644) // only an optimisation for the next import
			}
		}
		fmt.Fprintf(out, "images: %-45s imported in %s\n", r.Name, time.Since(start).Round(10*time.Millisecond))
	}
	return nil
}
