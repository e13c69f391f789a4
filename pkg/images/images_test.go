package images

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	labimages "github.com/thaw-dev/thaw/pkg/lab/images"
)

var twoPlatforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

func TestParsePlatforms(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []v1.Platform
		wantErr bool
	}{
		{in: "linux/amd64", want: DefaultPlatforms},
		{in: "linux/amd64, linux/arm64", want: twoPlatforms},
		{in: "", wantErr: true},
		{in: "windows/amd64", wantErr: true},
		{in: "linux", wantErr: true},
		{in: "linux/arm/v7", wantErr: true},
		{in: "linux/amd64,linux/amd64", wantErr: true},
	} {
		got, err := ParsePlatforms(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("ParsePlatforms(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// fakeBinaries writes one fake static binary per component and platform (the images never run them).
func fakeBinaries(t *testing.T, dir string) map[string][]Binary {
	t.Helper()
	out := map[string][]Binary{}
	for _, c := range Components {
		for _, p := range twoPlatforms {
			path := filepath.Join(dir, p.Architecture, c)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte("\x7fELF "+c+" "+p.Architecture), 0o755); err != nil {
				t.Fatal(err)
			}
			out[c] = append(out[c], Binary{Platform: p, Path: path})
		}
	}
	return out
}

func indexes(t *testing.T, bins map[string][]Binary) map[string]v1.ImageIndex {
	t.Helper()
	out := map[string]v1.ImageIndex{}
	for c, b := range bins {
		idx, err := Index(c, b)
		if err != nil {
			t.Fatal(err)
		}
		out[c] = idx
	}
	return out
}

// basicAuth puts a registry behind HTTP basic auth, as most real registries are.
func basicAuth(user, pass string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// dockerConfig points the default keychain at a config.json holding auths (nil: none).
func dockerConfig(t *testing.T, host, user, pass string) {
	t.Helper()
	dir := t.TempDir()
	cfg := `{}`
	if user != "" {
		cfg = `{"auths":{"` + host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + `"}}}`
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
}

// Push to a real registry (go-containerregistry's, in process, on loopback, behind basic auth), pull
// back, and check what a cluster will run: platforms, user, entrypoint, media types, digests.
func TestPushToRegistry(t *testing.T) {
	srv := httptest.NewServer(basicAuth("thaw", "secret", registry.New()))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	reg := host + "/team/thaw"
	ctx := context.Background()
	bins := fakeBinaries(t, t.TempDir())

	dockerConfig(t, host, "", "")
	if _, err := Push(ctx, indexes(t, bins), PushOptions{Registry: reg}); err == nil {
		t.Fatal("push without credentials succeeded")
	}
	dockerConfig(t, host, "thaw", "secret")
	pushed, err := Push(ctx, indexes(t, bins), PushOptions{Registry: reg, Tag: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pushed) != len(Components) {
		t.Fatalf("pushed %v", pushed)
	}
	// A second build of the same binaries has the same digests, and pushing it changes nothing.
	again, err := Push(ctx, indexes(t, bins), PushOptions{Registry: reg, Tag: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pushed, again) {
		t.Fatalf("second build %v, first %v", again, pushed)
	}
	for _, p := range pushed {
		if want := reg + "/" + p.Component + ":v1"; p.Tag != want {
			t.Errorf("tag %s, want %s", p.Tag, want)
		}
		ref, err := name.ParseReference(p.Ref())
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Index(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(PushOptions{}.keychain()))
		if err != nil {
			t.Fatal(err)
		}
		if mt, _ := idx.MediaType(); mt != types.OCIImageIndex {
			t.Errorf("%s: index media type %s", p.Component, mt)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(im.Manifests) != len(twoPlatforms) {
			t.Fatalf("%s: %d manifests", p.Component, len(im.Manifests))
		}
		for i, desc := range im.Manifests {
			if desc.Platform == nil || !reflect.DeepEqual(*desc.Platform, twoPlatforms[i]) || desc.MediaType != types.OCIManifestSchema1 {
				t.Errorf("%s: manifest %d: %+v", p.Component, i, desc)
			}
			img, err := idx.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			wantEntry := []string{"/ko-app/" + p.Component}
			if cf.OS != "linux" || cf.Architecture != twoPlatforms[i].Architecture || cf.Config.User != labimages.NonRootUser ||
				!reflect.DeepEqual(cf.Config.Entrypoint, wantEntry) || !cf.Created.IsZero() {
				t.Errorf("%s %s: config os=%s arch=%s user=%s entrypoint=%v created=%v", p.Component, twoPlatforms[i].Architecture,
					cf.OS, cf.Architecture, cf.Config.User, cf.Config.Entrypoint, cf.Created)
			}
			layers, err := img.Layers()
			if err != nil || len(layers) != 1 {
				t.Fatalf("%s: layers %d, %v", p.Component, len(layers), err)
			}
			if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
				t.Errorf("%s: layer media type %s", p.Component, mt)
			}
		}
	}
}

// The real components' build, reduced to a tiny main package: two builds of the same tree for two
// platforms give the same bytes, static binaries, and the same index digests.
func TestBuildBinariesReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]string{"activator": "./pkg/images/testdata/hello"}
	ctx := context.Background()
	var digests []v1.Hash
	var first map[string][]Binary
	for i := 0; i < 2; i++ {
		bins, err := BuildBinaries(ctx, repo, t.TempDir(), pkgs, twoPlatforms)
		if err != nil {
			t.Fatal(err)
		}
		if len(bins["activator"]) != 2 {
			t.Fatalf("binaries %v", bins)
		}
		for j, b := range bins["activator"] {
			data, err := os.ReadFile(b.Path)
			if err != nil {
				t.Fatal(err)
			}
			if err := labimages.CheckStatic(data); err != nil {
				t.Errorf("%s: %v", b.Path, err)
			}
			if first != nil {
				prev, _ := os.ReadFile(first["activator"][j].Path)
				if !bytes.Equal(prev, data) {
					t.Errorf("%s differs between two builds", b.Platform.Architecture)
				}
			}
		}
		first = bins
		idx, err := Index("activator", bins["activator"])
		if err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Fatalf("index digests %v", digests)
	}
}

func TestIndexRejectsDynamic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dyn")
	if err := os.WriteFile(p, []byte("\x7fELF needs /lib64/ld-linux-x86-64.so.2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Index("activator", []Binary{{Platform: DefaultPlatforms[0], Path: p}}); err == nil {
		t.Fatal("a dynamic binary was packed")
	}
}
