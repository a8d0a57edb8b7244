package main

import (
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// SPDX 2.3 JSON (https://spdx.github.io/spdx-spec/v2.3/), only the fields written here.
type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	SPDXID           string            `json:"SPDXID"`
	Name             string            `json:"name"`
	VersionInfo      string            `json:"versionInfo,omitempty"`
	DownloadLocation string            `json:"downloadLocation"`
	FilesAnalyzed    bool              `json:"filesAnalyzed"`
	LicenseConcluded string            `json:"licenseConcluded"`
	LicenseDeclared  string            `json:"licenseDeclared"`
	CopyrightText    string            `json:"copyrightText"`
	PrimaryPurpose   string            `json:"primaryPackagePurpose,omitempty"`
	Checksums        []spdxChecksum    `json:"checksums,omitempty"`
	ExternalRefs     []spdxExternalRef `json:"externalRefs,omitempty"`
	Comment          string            `json:"comment,omitempty"`
}

type spdxChecksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

type spdxExternalRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

const noAssertion = "NOASSERTION"

// writeSBOM describes the image (by its index digest) and the Go binaries in its directories.
// Binaries that are the same module at the same version on several platforms are one package.
func writeSBOM(cfg config, indexDigest string) error {
	// checkReference made sure every name ends in :tag.
	i := strings.LastIndexByte(cfg.names[0], ':')
	repo, tag := cfg.names[0][:i], cfg.names[0][i+1:]
	hex := strings.TrimPrefix(indexDigest, "sha256:")
	doc := spdxDocument{
		SPDXVersion:       "SPDX-2.3",
		DataLicense:       "CC0-1.0",
		SPDXID:            "SPDXRef-DOCUMENT",
		Name:              repo + "@" + indexDigest,
		DocumentNamespace: "https://" + repo + "/spdx/" + hex,
		CreationInfo: spdxCreationInfo{
			Created:  cfg.created.Format("2006-01-02T15:04:05Z"),
			Creators: []string{"Tool: ocibuild"},
		},
	}
	image := spdxPackage{
		SPDXID:           "SPDXRef-Image",
		Name:             repo,
		VersionInfo:      tag,
		DownloadLocation: noAssertion,
		LicenseConcluded: noAssertion,
		LicenseDeclared:  noAssertion,
		CopyrightText:    noAssertion,
		PrimaryPurpose:   "CONTAINER",
		Checksums:        []spdxChecksum{{Algorithm: "SHA256", Value: hex}},
		ExternalRefs: []spdxExternalRef{{
			Category: "PACKAGE-MANAGER", Type: "purl",
			Locator: fmt.Sprintf("pkg:oci/%s@sha256%%3A%s?repository_url=%s", filepath.Base(repo), hex, repo),
		}},
	}
	doc.Packages = append(doc.Packages, image)
	doc.Relationships = append(doc.Relationships, spdxRelationship{"SPDXRef-DOCUMENT", "DESCRIBES", image.SPDXID})

	ids := map[string]string{} // purl → SPDXID
	add := func(name, version, purl, comment string) string {
		if id, ok := ids[purl]; ok {
			return id
		}
		id := fmt.Sprintf("SPDXRef-Package-%d", len(ids)+1)
		ids[purl] = id
		doc.Packages = append(doc.Packages, spdxPackage{
			SPDXID: id, Name: name, VersionInfo: version,
			DownloadLocation: noAssertion, LicenseConcluded: noAssertion, LicenseDeclared: noAssertion,
			CopyrightText: noAssertion, Comment: comment,
			ExternalRefs: []spdxExternalRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: purl}},
		})
		return id
	}
	related := map[spdxRelationship]bool{}
	relate := func(r spdxRelationship) {
		if !related[r] {
			related[r] = true
			doc.Relationships = append(doc.Relationships, r)
		}
	}
	for _, p := range cfg.platforms {
		bins, err := goBinaries(p.dir)
		if err != nil {
			return err
		}
		for _, b := range bins {
			main := add(b.info.Main.Path, b.info.Main.Version, purl(b.info.Main.Path, b.info.Main.Version),
				"Go binary /"+b.rel)
			relate(spdxRelationship{image.SPDXID, "CONTAINS", main})
			std := add("stdlib", b.info.GoVersion, purl("stdlib", b.info.GoVersion), "Go standard library")
			relate(spdxRelationship{main, "DEPENDS_ON", std})
			for _, d := range b.info.Deps {
				m := d
				if d.Replace != nil {
					m = d.Replace
				}
				relate(spdxRelationship{main, "DEPENDS_ON", add(d.Path, m.Version, purl(d.Path, m.Version), "")})
			}
		}
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode SBOM: %w", err)
	}
	tmp := cfg.sbom + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write SBOM: %w", err)
	}
	if err := os.Rename(tmp, cfg.sbom); err != nil {
		return fmt.Errorf("write SBOM: %w", err)
	}
	return nil
}

func purl(path, version string) string {
	if version == "" || version == "(devel)" {
		return "pkg:golang/" + path
	}
	return "pkg:golang/" + path + "@" + version
}

type goBinary struct {
	rel  string
	info *buildinfo.BuildInfo
}

// goBinaries are the regular files under dir that carry Go build information, in path order.
func goBinaries(dir string) ([]goBinary, error) {
	var out []goBinary
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := buildinfo.ReadFile(p)
		if err != nil {
			return nil // not a Go binary
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, goBinary{rel: filepath.ToSlash(rel), info: info})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].rel < out[j].rel })
	return out, err
}
