package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	annotationRefName   = "org.opencontainers.image.ref.name"
	annotationImageName = "io.containerd.image.name"
)

// run builds the image index, writes the layout tar (and the SBOM) and returns the index digest.
func run(cfg config) (string, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, p := range cfg.platforms {
		img, err := image(cfg, p)
		if err != nil {
			return "", err
		}
		adds = append(adds, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: p.os, Architecture: p.arch, Variant: p.variant},
			},
		})
	}
	idx = mutate.AppendManifests(idx, adds...)
	if len(cfg.labels) > 0 {
		idx = mutate.Annotations(idx, cfg.labels).(v1.ImageIndex)
	}
	digest, err := idx.Digest()
	if err != nil {
		return "", fmt.Errorf("digest index: %w", err)
	}

	dir, err := os.MkdirTemp(filepath.Dir(cfg.out), ".ocibuild-")
	if err != nil {
		return "", fmt.Errorf("create work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		return "", fmt.Errorf("write layout: %w", err)
	}
	for _, name := range cfg.names {
		err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
			annotationRefName:   name,
			annotationImageName: name,
		}))
		if err != nil {
			return "", fmt.Errorf("add %q to layout: %w", name, err)
		}
	}
	tmp := filepath.Join(dir, "out.tar")
	f, err := os.Create(tmp)
	if err != nil {
		return "", fmt.Errorf("create %q: %w", tmp, err)
	}
	if err := writeTar(f, filepath.Join(dir, "layout"), cfg.created, false, false); err != nil {
		f.Close()
		return "", fmt.Errorf("write layout tar: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write layout tar: %w", err)
	}
	if err := os.Rename(tmp, cfg.out); err != nil {
		return "", fmt.Errorf("move layout tar into place: %w", err)
	}
	if cfg.sbom != "" {
		if err := writeSBOM(cfg, digest.String()); err != nil {
			return "", err
		}
	}
	return digest.String(), nil
}

// image is one platform's image: the empty base plus one layer holding the directory.
func image(cfg config, p platformDir) (v1.Image, error) {
	var layerTar bytes.Buffer
	if err := writeTar(&layerTar, p.dir, cfg.created, true, cfg.owners); err != nil {
		return nil, fmt.Errorf("pack %q: %w", p.dir, err)
	}
	data := layerTar.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("make layer of %q: %w", p.dir, err)
	}
	created := v1.Time{Time: cfg.created}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: created, CreatedBy: "ocibuild: " + filepath.Base(p.dir)},
	})
	if err != nil {
		return nil, fmt.Errorf("add layer of %q: %w", p.dir, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.os, p.arch, p.variant
	cf.Created = created
	cf.Config = v1.Config{
		Entrypoint: cfg.entrypoint,
		Cmd:        cfg.cmd,
		User:       cfg.user,
		WorkingDir: cfg.workdir,
		Env:        cfg.env,
	}
	if len(cfg.labels) > 0 {
		cf.Config.Labels = cfg.labels
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

// writeTar writes the tree under root as a tar with sorted entries, dated mtime and owned by 0:0
// unless keepOwners. Layers keep the files' permission bits; the layout tar gets 0644/0755,
// since its files' modes say nothing.
func writeTar(w io.Writer, root string, mtime time.Time, keepModes, keepOwners bool) error {
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		rel := filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: rel, ModTime: mtime, Uid: 0, Gid: 0}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && keepOwners {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		}
		mode := int64(fi.Mode().Perm())
		for bit, unix := range map[fs.FileMode]int64{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
			if fi.Mode()&bit != 0 {
				mode |= unix
			}
		}
		switch {
		case fi.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
			if !keepModes {
				mode = 0o755
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname, mode = tar.TypeSymlink, target, 0o777
		case fi.Mode().IsRegular():
			hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
			if !keepModes {
				mode = 0o644
			}
		default:
			return fmt.Errorf("%q: only directories, regular files and symbolic links can be packed", p)
		}
		hdr.Mode = mode
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("copy %q: %w", p, err)
			}
		}
	}
	return tw.Close()
}
