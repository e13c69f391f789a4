// Package images builds single-layer OCI images from static binaries, without a registry or a daemon,
// writes them as docker-style tarballs, and imports them into containerd's CRI namespace.
package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image names. Everything but pause is tagged under ko.local, a registry Knative's controller skips
// tag resolution for (config-deployment registries-skipping-tag-resolving), and with a tag other than
// "latest" so that the default pull policy is IfNotPresent.
const (
	// Registry is the registry prefix of every lab-built image.
	Registry = "ko.local"
	// PauseImage is the sandbox image. It is containerd v2.2's default pinned sandbox image, so a CRI
	// config that does not name one still finds it locally and never pulls.
	PauseImage = "registry.k8s.io/pause:3.10.1"
	// CoreDNSImage runs as root (CoreDNS binds port 53 and the binary carries no file capabilities).
	CoreDNSImage = Registry + "/coredns/coredns:v1.14.7"
	// LocalTag tags images built from this checkout (Thaw's components, sample apps).
	LocalTag = "dev"
	// KnativeTag tags upstream Knative images.
	KnativeTag = "v0.50.0"
	// Namespace is containerd's namespace for images the kubelet (CRI) sees.
	Namespace = "k8s.io"
	// NonRootUser is the user of every image except pause and CoreDNS: upstream Knative's
	// Deployments and queue-proxy sidecar set runAsNonRoot, which rejects images running as root.
	NonRootUser = "65532:65532"
)

// KnativeImage names the image of an upstream Knative Serving component ("controller", "webhook",
// "activator", "autoscaler", "queue"), e.g. ko.local/knative/activator:v0.50.0.
func KnativeImage(component string) string {
	return Registry + "/knative/" + component + ":" + KnativeTag
}

// ThawImage names the image of Thaw's component ("activator", "autoscaler"), e.g. ko.local/thaw/activator:dev.
func ThawImage(component string) string { return Registry + "/thaw/" + component + ":" + LocalTag }

// AppImage names a sample app's image (the directory name under test/apps), e.g. ko.local/apps/helloworld:dev.
func AppImage(app string) string { return Registry + "/apps/" + app + ":" + LocalTag }

// Spec describes an image made of one static binary.
type Spec struct {
	// Name is the full reference, e.g. ko.local/knative/activator:v0.50.0.
	Name string
	// Binary is the path of the static binary on this host. It is stored at /ko-app/<BinaryName>.
	Binary string
	// BinaryName defaults to the base name of Binary.
	BinaryName string
	// Entrypoint defaults to the binary's path in the image.
	Entrypoint []string
	Cmd        []string
	// Env is added to the defaults (PATH, KO_DATA_PATH).
	Env []string
	// User defaults to NonRootUser.
	User       string
	WorkingDir string // default "/"
	// Arch is the image's architecture, in GOARCH's names; default amd64, the lab's node.
	Arch string
	// OCI gives the image OCI media types (manifest, config, layer), for registries and OCI indexes;
	// without it the lab's tarballs keep Docker's.
	OCI bool
}

// ImageRef is a built image.
type ImageRef struct {
	Name    string // the reference it is tagged with
	Tarball string // docker-style tarball holding it
	Digest  string // manifest digest, sha256:...
	ImageID string // config digest, sha256:...
	Built   bool   // false when an up-to-date tarball was reused
	// Skipped, when not empty, says why this image was not built (its binary is missing); the other
	// fields except Name are then empty.
	Skipped string
}

// AppDir is where binaries live in an image (ko's layout, which upstream's tooling expects).
const AppDir = "/ko-app"

// formatVersion changes whenever the image layout written here changes, to rebuild cached tarballs.
const formatVersion = "1"

// Build writes spec's image as a tarball in outDir, unless the tarball there already holds the same
// binary with the same spec. The image is reproducible: same binary and spec, same digest.
func Build(spec Spec, outDir string) (ImageRef, error) {
	ref := ImageRef{Name: spec.Name}
	tag, err := name.NewTag(spec.Name, name.StrictValidation)
	if err != nil {
		return ref, fmt.Errorf("image name %q: %w", spec.Name, err)
	}
	bin, err := os.ReadFile(spec.Binary)
	if err != nil {
		return ref, fmt.Errorf("image %s: %w", spec.Name, err)
	}
	if err := checkStatic(bin); err != nil {
		return ref, fmt.Errorf("image %s: %s: %w", spec.Name, spec.Binary, err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return ref, err
	}
	key := specKey(spec, bin)
	base := filepath.Join(outDir, fileName(spec.Name))
	ref.Tarball = base + ".tar"
	metaPath := base + ".json"
	if m, err := readMeta(metaPath); err == nil && m.Key == key {
		if _, err := os.Stat(ref.Tarball); err == nil {
			ref.Digest, ref.ImageID = m.Digest, m.ImageID
			return ref, nil
		}
	}

	img, err := Image(spec, bin)
	if err != nil {
		return ref, fmt.Errorf("image %s: %w", spec.Name, err)
	}
	tmp := ref.Tarball + ".tmp"
	if err := tarball.MultiWriteToFile(tmp, map[name.Tag]v1.Image{tag: img}); err != nil {
		os.Remove(tmp)
		return ref, fmt.Errorf("image %s: write tarball: %w", spec.Name, err)
	}
	if err := os.Rename(tmp, ref.Tarball); err != nil {
		return ref, err
	}
	d, err := img.Digest()
	if err != nil {
		return ref, err
	}
	id, err := img.ConfigName()
	if err != nil {
		return ref, err
	}
	ref.Digest, ref.ImageID, ref.Built = d.String(), id.String(), true
	data, _ := json.Marshal(meta{Key: key, Digest: ref.Digest, ImageID: ref.ImageID})
	if err := os.WriteFile(metaPath, data, 0o644); err != nil {
		return ref, err
	}
	return ref, nil
}

// Image assembles spec's image in memory from the binary's content.
func Image(spec Spec, bin []byte) (v1.Image, error) {
	binName := path.Join(AppDir, inImageName(spec))
	layerTar, err := layerTar(binName, bin)
	if err != nil {
		return nil, err
	}
	layerOpts := []tarball.LayerOption{tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching}
	base := empty.Image
	if spec.OCI {
		layerOpts = append(layerOpts, tarball.WithMediaType(types.OCILayer))
		base = mutate.ConfigMediaType(mutate.MediaType(base, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, layerOpts...)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cfg := v1.Config{
		Entrypoint: spec.Entrypoint,
		Cmd:        spec.Cmd,
		Env:        append([]string{"PATH=" + AppDir + ":/usr/local/bin:/usr/bin:/bin", "KO_DATA_PATH=/var/run/ko"}, spec.Env...),
		User:       spec.User,
		WorkingDir: spec.WorkingDir,
	}
	if len(cfg.Entrypoint) == 0 {
		cfg.Entrypoint = []string{binName}
	}
	if cfg.User == "" {
		cfg.User = NonRootUser
	}
	if cfg.WorkingDir == "" {
		cfg.WorkingDir = "/"
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	// os/architecture are required: containerd's import silently drops an image without them.
	// Created stays zero so that the digest depends only on content.
	arch := spec.Arch
	if arch == "" {
		arch = "amd64"
	}
	cf.OS, cf.Architecture, cf.Config = "linux", arch, cfg
	return mutate.ConfigFile(img, cf)
}

// layerTar is the image's only layer: the binary plus the few files a scratch image lacks (a nonroot
// user in /etc/passwd, a writable /tmp, ko's data directory).
func layerTar(binName string, bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dir := func(name string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	passwd := "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group := "root:x:0:\nnonroot:x:65532:\n"
	steps := []func() error{
		func() error { return dir("etc", 0o755, 0) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		func() error { return dir("home", 0o755, 0) },
		func() error { return dir("home/nonroot", 0o700, 65532) },
		func() error { return dir("tmp", 0o1777, 0) },
		func() error { return dir("var", 0o755, 0) },
		func() error { return dir("var/run", 0o755, 0) },
		func() error { return dir("var/run/ko", 0o755, 0) },
		func() error { return dir(strings.TrimPrefix(AppDir, "/"), 0o755, 0) },
		func() error { return file(strings.TrimPrefix(binName, "/"), 0o755, bin) },
		tw.Close,
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// CheckStatic rejects binaries that need a dynamic loader, as Build does.
func CheckStatic(bin []byte) error { return checkStatic(bin) }

// checkStatic rejects binaries that need a dynamic loader: they cannot run in a scratch image.
func checkStatic(bin []byte) error {
	if len(bin) < 4 || string(bin[:4]) != "\x7fELF" {
		return errors.New("not an ELF binary")
	}
	if bytes.Contains(bin, []byte("/lib64/ld-linux-x86-64.so.2")) || bytes.Contains(bin, []byte("/lib/ld-linux-aarch64.so.1")) {
		return errors.New("dynamically linked (build it with CGO_ENABLED=0)")
	}
	return nil
}

type meta struct {
	Key     string `json:"key"`
	Digest  string `json:"digest"`
	ImageID string `json:"imageID"`
	// CtrDigest is the digest containerd recorded when it last imported the tarball; see Import.
	CtrDigest string `json:"ctrDigest,omitempty"`
}

func readMeta(p string) (meta, error) {
	var m meta
	data, err := os.ReadFile(p)
	if err != nil {
		return m, err
	}
	err = json.Unmarshal(data, &m)
	return m, err
}

func specKey(spec Spec, bin []byte) string {
	h := sha256.New()
	h.Write(bin)
	data, _ := json.Marshal(struct {
		V    string
		Spec Spec
		Base string
	}{formatVersion, Spec{Name: spec.Name, Entrypoint: spec.Entrypoint, Cmd: spec.Cmd, Env: spec.Env, User: spec.User, WorkingDir: spec.WorkingDir}, inImageName(spec)})
	h.Write(data)
	if spec.Arch != "" || spec.OCI {
		// Only images built for a registry set these; the lab's keys stay as they were.
		fmt.Fprintf(h, "\x00%s\x00%t", spec.Arch, spec.OCI)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func inImageName(spec Spec) string {
	if spec.BinaryName != "" {
		return spec.BinaryName
	}
	return filepath.Base(spec.Binary)
}

// fileName turns an image reference into a flat file name.
func fileName(ref string) string {
	r := strings.NewReplacer("/", "_", ":", "_", "@", "_")
	return r.Replace(ref)
}
