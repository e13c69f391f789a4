package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/thaw-dev/thaw/pkg/lab/build"
)

// fakeStatic is enough of an ELF file for the builder, which never runs what it packs.
func fakeStatic(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("\x7fELF"+content), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// files returns the regular files and directories of the image's only layer: path → (mode, content).
type entry struct {
	mode     int64
	uid      int
	dir      bool
	contents []byte
}

func layerFiles(t *testing.T, tarPath, ref string) map[string]entry {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = entry{mode: h.Mode, uid: h.Uid, dir: h.Typeflag == tar.TypeDir, contents: data}
	}
	return out
}

func TestBuildImageConfigAndLayer(t *testing.T) {
	dir := t.TempDir()
	bin := fakeStatic(t, dir, "thaw-activator", "activator")
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		name, user string
		spec       Spec
		wantEntry  []string
		wantUser   string
		wantBinary string
	}{
		{
			name:       "defaults",
			spec:       Spec{Name: ThawImage("activator"), Binary: bin},
			wantEntry:  []string{"/ko-app/thaw-activator"},
			wantUser:   NonRootUser,
			wantBinary: "ko-app/thaw-activator",
		},
		{
			name:       "renamed binary, own user and env",
			spec:       Spec{Name: KnativeImage("activator"), Binary: bin, BinaryName: "activator", User: "0:0", Env: []string{"A=b"}},
			wantEntry:  []string{"/ko-app/activator"},
			wantUser:   "0:0",
			wantBinary: "ko-app/activator",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := Build(tc.spec, out)
			if err != nil {
				t.Fatal(err)
			}
			if !ref.Built || ref.Name != tc.spec.Name || ref.Digest == "" || ref.ImageID == "" {
				t.Fatalf("ref = %+v", ref)
			}
			tag, err := name.NewTag(tc.spec.Name)
			if err != nil {
				t.Fatal(err)
			}
			img, err := tarball.ImageFromPath(ref.Tarball, &tag)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS != "linux" || cf.Architecture != "amd64" {
				t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
			}
			if cf.Config.User != tc.wantUser {
				t.Errorf("user %q, want %q", cf.Config.User, tc.wantUser)
			}
			if !slices.Equal(cf.Config.Entrypoint, tc.wantEntry) {
				t.Errorf("entrypoint %q, want %q", cf.Config.Entrypoint, tc.wantEntry)
			}
			if cf.Config.WorkingDir != "/" {
				t.Errorf("workdir %q", cf.Config.WorkingDir)
			}
			for _, e := range tc.spec.Env {
				if !slices.Contains(cf.Config.Env, e) {
					t.Errorf("env %q missing from %q", e, cf.Config.Env)
				}
			}
			if !cf.Created.IsZero() {
				t.Errorf("created %v, want zero for reproducible digests", cf.Created)
			}
			d, _ := img.Digest()
			if d.String() != ref.Digest {
				t.Errorf("digest in tarball %s, reported %s", d, ref.Digest)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Layers) != 1 {
				t.Fatalf("%d layers in manifest", len(m.Layers))
			}
			files := layerFiles(t, ref.Tarball, tc.spec.Name)
			got, ok := files[tc.wantBinary]
			if !ok || got.mode != 0o755 || string(got.contents) != "\x7fELFactivator" {
				t.Errorf("binary %s: %+v (present %v)", tc.wantBinary, got, ok)
			}
			if tmp := files["tmp/"]; !tmp.dir || tmp.mode != 0o1777 {
				t.Errorf("/tmp: %+v", tmp)
			}
			if !bytes.Contains(files["etc/passwd"].contents, []byte(":65532:65532:")) {
				t.Errorf("/etc/passwd lacks the nonroot user: %q", files["etc/passwd"].contents)
			}
		})
	}
}

func TestBuildReusesAndRebuilds(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	bin := fakeStatic(t, dir, "app", "v1")
	spec := Spec{Name: AppImage("app"), Binary: bin}

	first, err := Build(spec, out)
	if err != nil || !first.Built {
		t.Fatalf("first build: %+v, %v", first, err)
	}
	second, err := Build(spec, out)
	if err != nil || second.Built || second.Digest != first.Digest {
		t.Fatalf("unchanged binary: %+v, %v; want reuse of %s", second, err, first.Digest)
	}
	// Same content elsewhere: same digest (the image is reproducible).
	other, err := Build(spec, filepath.Join(dir, "other"))
	if err != nil || !other.Built || other.Digest != first.Digest {
		t.Fatalf("rebuild elsewhere: %+v, %v; want digest %s", other, err, first.Digest)
	}
	// A changed spec rebuilds.
	withEnv := spec
	withEnv.Env = []string{"TARGET=Thaw"}
	env, err := Build(withEnv, out)
	if err != nil || !env.Built || env.Digest == first.Digest {
		t.Fatalf("changed env: %+v, %v", env, err)
	}
	// A changed binary rebuilds.
	fakeStatic(t, dir, "app", "v2")
	third, err := Build(spec, out)
	if err != nil || !third.Built || third.Digest == first.Digest {
		t.Fatalf("changed binary: %+v, %v", third, err)
	}
	// A lost tarball rebuilds even with its metadata in place.
	if err := os.Remove(third.Tarball); err != nil {
		t.Fatal(err)
	}
	fourth, err := Build(spec, out)
	if err != nil || !fourth.Built || fourth.Digest != third.Digest {
		t.Fatalf("lost tarball: %+v, %v", fourth, err)
	}
}

func TestBuildRejects(t *testing.T) {
	dir := t.TempDir()
	dynamic := filepath.Join(dir, "dyn")
	if err := os.WriteFile(dynamic, []byte("\x7fELF....../lib64/ld-linux-x86-64.so.2..."), 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := fakeStatic(t, dir, "good", "")
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"dynamic binary", Spec{Name: AppImage("x"), Binary: dynamic}},
		{"not ELF", Spec{Name: AppImage("x"), Binary: script}},
		{"missing binary", Spec{Name: AppImage("x"), Binary: filepath.Join(dir, "nope")}},
		{"bad name", Spec{Name: "UPPER/Case:tag", Binary: good}},
		{"no tag", Spec{Name: "", Binary: good}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ref, err := Build(tc.spec, filepath.Join(dir, "out")); err == nil {
				t.Fatalf("no error; ref %+v", ref)
			}
		})
	}
}

func TestBuildAll(t *testing.T) {
	dir := t.TempDir()
	p := build.Paths{
		Knative:     map[string]string{},
		Thaw:        map[string]string{"autoscaler": fakeStatic(t, dir, "thaw-autoscaler", "as")},
		ThawSkipped: map[string]string{"activator": "does not compile"},
		Apps:        map[string]string{"helloworld": fakeStatic(t, dir, "app-helloworld", "hw")},
		CoreDNS:     fakeStatic(t, dir, "coredns", "dns"),
		Pause:       fakeStatic(t, dir, "pause", "p"),
	}
	for _, c := range build.KnativeComponents() {
		p.Knative[c] = fakeStatic(t, dir, c, c)
	}
	refs, err := BuildAll(context.Background(), p, filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]ImageRef{}
	for _, r := range refs {
		got[r.Name] = r
	}
	want := []string{
		KnativeImage("controller"), KnativeImage("webhook"), KnativeImage("activator"),
		KnativeImage("autoscaler"), KnativeImage("queue"), ThawImage("autoscaler"),
		CoreDNSImage, PauseImage, AppImage("helloworld"),
	}
	for _, n := range want {
		if r, ok := got[n]; !ok || r.Skipped != "" || r.Tarball == "" {
			t.Errorf("%s: %+v (present %v)", n, r, ok)
		}
	}
	if r := got[ThawImage("activator")]; r.Skipped != "does not compile" {
		t.Errorf("thaw activator: %+v, want skipped", r)
	}
	if len(refs) != len(want)+1 {
		t.Errorf("%d refs, want %d", len(refs), len(want)+1)
	}
	// Each image holds its binary under its component name.
	files := layerFiles(t, got[ThawImage("autoscaler")].Tarball, ThawImage("autoscaler"))
	if string(files["ko-app/autoscaler"].contents) != "\x7fELFas" {
		t.Errorf("thaw autoscaler image lacks /ko-app/autoscaler")
	}

	p.Pause = ""
	if _, err := BuildAll(context.Background(), p, filepath.Join(dir, "out")); err == nil {
		t.Error("missing pause binary: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := BuildAll(ctx, p, filepath.Join(dir, "out")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestParseList(t *testing.T) {
	out := []byte(`REF                                     TYPE                                                 DIGEST                                                                  SIZE     PLATFORMS   LABELS
ko.local/apps/helloworld:dev            application/vnd.docker.distribution.manifest.v2+json sha256:aaaa 3.1 MiB  linux/amd64 io.cri-containerd.image=managed
registry.k8s.io/pause:3.10.1            application/vnd.oci.image.manifest.v1+json           sha256:bbbb 1.0 MiB  linux/amd64 -
garbage line
`)
	got := parseList(out)
	if len(got) != 2 || got["ko.local/apps/helloworld:dev"] != "sha256:aaaa" || got["registry.k8s.io/pause:3.10.1"] != "sha256:bbbb" {
		t.Fatalf("parseList = %v", got)
	}
}

// TestPause builds the real pause binary, checks that it stops cleanly on SIGTERM, and images it.
func TestPause(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := exec.Command(bin)
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	// Before main installs its handler, SIGTERM would kill pause outright; give it a moment to start.
	// It must still be running then (it never exits by itself), and exit 0 on the signal.
	select {
	case err := <-exited:
		t.Fatalf("pause exited by itself: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := run.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("pause on SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(10 * time.Second):
		run.Process.Kill()
		t.Fatal("pause ignored SIGTERM")
	}
	ref, err := Build(Spec{Name: PauseImage, Binary: bin, User: "65535:65535"}, filepath.Join(dir, "out"))
	if err != nil || !ref.Built {
		t.Fatalf("%+v, %v", ref, err)
	}
}
