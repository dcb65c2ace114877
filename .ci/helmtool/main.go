// helmtool: the offline half of .ci/helm-check.
//
//	helmtool k8s-schemas -swagger swagger.json -out DIR
//	    kubeconform's strict standalone schemas (DIR/<kind>-<group>-<version>.json) from the
//	    Kubernetes OpenAPI v2 document that the k8s.io/kubernetes module ships.
//	helmtool crd-schemas -out DIR CRD.yaml...
//	    the same for the openAPIV3Schema of CustomResourceDefinitions.
//	helmtool check-render -name NAME [-offportctl BIN] < rendered.yaml
//	    assertions on `helm template` output (see checkRender).
//	helmtool check-readme -values values.yaml -schema values.schema.json -readme README.md
//	    every value of the chart is in the README's table with its default, and nothing else.
//
// Only the standard library and a YAML parser: it runs on a machine that reaches nothing but
// package registries.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

type M = map[string]any

func main() {
	if len(os.Args) < 2 {
		fatalf("usage: helmtool k8s-schemas|crd-schemas|check-render|check-readme ...")
	}
	var err error
	switch os.Args[1] {
	case "k8s-schemas":
		err = k8sSchemas(os.Args[2:])
	case "crd-schemas":
		err = crdSchemas(os.Args[2:])
	case "check-render":
		err = checkRender(os.Args[2:])
	case "check-readme":
		err = checkReadme(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fatalf("helmtool %s: %v", os.Args[1], err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

// ---------------------------------------------------------------------------------------------
// JSON schemas for kubeconform

// kindFile is kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json for a group/version/kind.
func kindFile(group, version, kind string) string {
	name := strings.ToLower(kind)
	if group != "" {
		name += "-" + strings.ToLower(strings.Split(group, ".")[0])
	}
	return name + "-" + strings.ToLower(version) + ".json"
}

var intOrString = func() M {
	return M{"oneOf": []any{M{"type": "string"}, M{"type": "integer"}}}
}

// strictSchema rewrites one schema node the way kubeconform's openapi2jsonschema does for its
// "-strict" schemas: objects with properties accept no other property, int-or-string becomes
// oneOf string/integer, and an OpenAPI `nullable` also accepts null.
func strictSchema(node any) any {
	m, ok := node.(M)
	if !ok {
		return node
	}
	if m["format"] == "int-or-string" || m["x-kubernetes-int-or-string"] == true {
		out := intOrString()
		if d, ok := m["description"]; ok {
			out["description"] = d
		}
		return out
	}
	out := M{}
	for k, v := range m {
		out[k] = v
	}
	if props, ok := m["properties"].(M); ok {
		np := M{}
		for k, v := range props {
			np[k] = strictSchema(v)
		}
		out["properties"] = np
		if _, has := m["additionalProperties"]; !has && m["x-kubernetes-preserve-unknown-fields"] != true {
			out["additionalProperties"] = false
		}
	}
	if pp, ok := m["patternProperties"].(M); ok {
		np := M{}
		for k, v := range pp {
			np[k] = strictSchema(v)
		}
		out["patternProperties"] = np
	}
	if ap, ok := m["additionalProperties"].(M); ok {
		out["additionalProperties"] = strictSchema(ap)
	}
	switch items := m["items"].(type) {
	case M:
		out["items"] = strictSchema(items)
	case []any:
		list := make([]any, len(items))
		for i, it := range items {
			list[i] = strictSchema(it)
		}
		out["items"] = list
	}
	for _, key := range []string{"allOf", "anyOf", "oneOf"} {
		if list, ok := m[key].([]any); ok {
			nl := make([]any, len(list))
			for i, it := range list {
				nl[i] = strictSchema(it)
			}
			out[key] = nl
		}
	}
	if not, ok := m["not"].(M); ok {
		out["not"] = strictSchema(not)
	}
	if m["nullable"] == true {
		if t, ok := m["type"].(string); ok {
			out["type"] = []any{t, "null"}
		}
	}
	return out
}

// refs collects the "#/definitions/<name>" references under node.
func refs(node any, into map[string]bool) {
	switch v := node.(type) {
	case M:
		for k, child := range v {
			if s, ok := child.(string); k == "$ref" && ok {
				into[strings.TrimPrefix(s, "#/definitions/")] = true
			} else {
				refs(child, into)
			}
		}
	case []any:
		for _, child := range v {
			refs(child, into)
		}
	}
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func k8sSchemas(args []string) error {
	fs := flag.NewFlagSet("k8s-schemas", flag.ExitOnError)
	swaggerPath := fs.String("swagger", "", "api/openapi-spec/swagger.json of k8s.io/kubernetes")
	outDir := fs.String("out", "", "output directory")
	_ = fs.Parse(args)
	data, err := os.ReadFile(*swaggerPath)
	if err != nil {
		return err
	}
	var swagger M
	if err := json.Unmarshal(data, &swagger); err != nil {
		return fmt.Errorf("%s: %w", *swaggerPath, err)
	}
	defs, ok := swagger["definitions"].(M)
	if !ok {
		return fmt.Errorf("%s: no definitions", *swaggerPath)
	}
	// Quantity is a string in the spec, but the API server takes numbers too (cpu: 1).
	if _, ok := defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]; ok {
		defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = M{"oneOf": []any{M{"type": "string"}, M{"type": "number"}}}
	}
	strict := map[string]any{}
	for name, def := range defs {
		strict[name] = strictSchema(def)
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	written := 0
	for name, def := range defs {
		gvks, _ := def.(M)["x-kubernetes-group-version-kind"].([]any)
		if len(gvks) != 1 { // none: not a kind; several: DeleteOptions, WatchEvent
			continue
		}
		gvk := gvks[0].(M)
		group, _ := gvk["group"].(string)
		version, _ := gvk["version"].(string)
		kind, _ := gvk["kind"].(string)
		apiVersion := version
		if group != "" {
			apiVersion = group + "/" + version
		}
		root := M{}
		for k, v := range strict[name].(M) {
			root[k] = v
		}
		if props, ok := root["properties"].(M); ok {
			np := M{}
			for k, v := range props {
				np[k] = v
			}
			np["apiVersion"] = M{"type": "string", "enum": []any{apiVersion}}
			np["kind"] = M{"type": "string", "enum": []any{kind}}
			root["properties"] = np
		}
		// Every definition the kind reaches, for "#/definitions/..." references.
		needed := map[string]bool{}
		refs(root, needed)
		for changed := true; changed; {
			changed = false
			for dep := range needed {
				before := len(needed)
				refs(strict[dep], needed)
				if len(needed) != before {
					changed = true
				}
			}
		}
		if len(needed) > 0 {
			included := M{}
			for dep := range needed {
				d, ok := strict[dep]
				if !ok {
					return fmt.Errorf("%s: reference to missing definition %s", name, dep)
				}
				included[dep] = d
			}
			root["definitions"] = included
		}
		root["$schema"] = "http://json-schema.org/draft-07/schema#"
		if err := writeJSON(filepath.Join(*outDir, kindFile(group, version, kind)), root); err != nil {
			return err
		}
		written++
	}
	if written < 100 {
		return fmt.Errorf("only %d kinds in %s", written, *swaggerPath)
	}
	fmt.Printf("%d Kubernetes kinds -> %s\n", written, *outDir)
	return nil
}

// yamlDocs decodes every document of a multi-document YAML stream.
func yamlDocs(r io.Reader) ([]M, error) {
	dec := yaml.NewDecoder(r)
	var docs []M
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if m, ok := doc.(M); ok {
			docs = append(docs, m)
		}
	}
}

func crdSchemas(args []string) error {
	fs := flag.NewFlagSet("crd-schemas", flag.ExitOnError)
	outDir := fs.String("out", "", "output directory")
	_ = fs.Parse(args)
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		docs, err := yamlDocs(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		n := 0
		for _, doc := range docs {
			if doc["kind"] != "CustomResourceDefinition" {
				continue
			}
			spec := get(doc, "spec").(M)
			group := spec["group"].(string)
			kind := get(spec, "names", "kind").(string)
			versions, _ := spec["versions"].([]any)
			for _, v := range versions {
				version := v.(M)
				schema, ok := get(version, "schema", "openAPIV3Schema").(M)
				if !ok {
					continue
				}
				root := strictSchema(schema).(M)
				props, _ := root["properties"].(M)
				if props == nil {
					props = M{}
				}
				props["apiVersion"] = M{"type": "string", "enum": []any{group + "/" + version["name"].(string)}}
				props["kind"] = M{"type": "string", "enum": []any{kind}}
				if _, ok := props["metadata"]; !ok {
					props["metadata"] = M{"type": "object"}
				}
				root["properties"] = props
				root["$schema"] = "http://json-schema.org/draft-07/schema#"
				file := filepath.Join(*outDir, kindFile(group, version["name"].(string), kind))
				if err := writeJSON(file, root); err != nil {
					return err
				}
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("%s: no CustomResourceDefinition with an openAPIV3Schema", path)
		}
		fmt.Printf("%s: %d version(s) -> %s\n", filepath.Base(path), n, *outDir)
	}
	return nil
}

// get walks nested maps; nil when a step is missing.
func get(node any, path ...string) any {
	for _, p := range path {
		m, ok := node.(M)
		if !ok {
			return nil
		}
		node = m[p]
	}
	return node
}

func list(node any) []any {
	l, _ := node.([]any)
	return l
}

func str(node any) string {
	s, _ := node.(string)
	return s
}

// ---------------------------------------------------------------------------------------------
// Assertions on rendered output

// The keys of offport.yaml the services accept (offport-kafka Settings; unknown keys are
// rejected there). Maps whose keys are free: kafka.properties. Lists of objects: normalize.sources.
var configKeys = map[string][]string{
	"":                  []string{"kafka", "registry", "topics", "log", "pipeline", "observability", "normalize", "stream"},
	"kafka":             {"bootstrap_servers", "properties", "security"},
	"kafka.security":    {"protocol", "sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file", "ca_location", "certificate_location", "key_location", "key_password", "key_password_file", "endpoint_identification"},
	"registry":          {"url", "timeout_ms", "username", "password", "password_file", "ca_location", "certificate_location", "key_location", "compatibility"},
	"topics":            {"prefix", "partitions", "replication_factor"},
	"log":               {"filter", "json"},
	"pipeline":          {"batch_max_records", "batch_linger_ms", "max_backoff_ms", "group_prefix", "instance_id", "dead_letter_format"},
	"observability":     {"listen"},
	"normalize":         {"max_record_bytes", "proxy_format", "default_device_id", "sources", "sources_file", "flow_wait_ms", "flow_max_held"},
	"normalize.sources": {"network", "device_id", "platform", "app_id", "from", "until"},
	"stream":            {"allowed_lateness_ms", "idle_timeout_ms", "stop_at_end", "max_timeline_entries", "restore_timeout_ms", "suppression_window_ms", "max_state_bytes", "workers"},
}

// Keys that would carry a secret in the rendered configuration.
var secretConfigKeys = map[string]bool{
	"kafka.security.sasl_password": true, "kafka.security.key_password": true, "registry.password": true,
}

var secretName = regexp.MustCompile(`(?i)(password|passwd|secret|token|credential|private[-_.]?key|keystore|jaas)`)

type checker struct {
	name     string
	failures []string
	checks   int
}

func (c *checker) expect(ok bool, format string, args ...any) {
	c.checks++
	if !ok {
		c.failures = append(c.failures, fmt.Sprintf(format, args...))
	}
}

func checkConfigKeys(c *checker, where, prefix string, node any) {
	m, ok := node.(M)
	if !ok {
		c.expect(false, "%s: %q is not a map", where, prefix)
		return
	}
	allowed := map[string]bool{}
	for _, k := range configKeys[prefix] {
		allowed[k] = true
	}
	for k, v := range m {
		path := strings.TrimPrefix(prefix+"."+k, ".")
		c.expect(allowed[k], "%s: offport.yaml has key %s, which the services do not accept", where, path)
		c.expect(!secretConfigKeys[path], "%s: offport.yaml carries the secret %s in a ConfigMap", where, path)
		switch {
		case path == "kafka.properties":
			for name := range v.(M) {
				c.expect(!secretName.MatchString(name), "%s: kafka.properties.%s looks like a secret in a ConfigMap", where, name)
			}
		case path == "normalize.sources":
			for _, src := range list(v) {
				checkConfigKeys(c, where, path, src)
			}
		case configKeys[path] != nil:
			checkConfigKeys(c, where, path, v)
		}
	}
}

func annotation(doc M, key string) string {
	return str(get(doc, "metadata", "annotations", key))
}

func hookWeight(doc M) (int, bool) {
	if annotation(doc, "helm.sh/hook") == "" {
		return 0, false
	}
	w := 0
	fmt.Sscanf(annotation(doc, "helm.sh/hook-weight"), "%d", &w)
	return w, true
}

func labelsMatch(selector, labels any) bool {
	sel, _ := selector.(M)
	lab, _ := labels.(M)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if lab[k] != v {
			return false
		}
	}
	return true
}

func checkRender(args []string) error {
	fs := flag.NewFlagSet("check-render", flag.ExitOnError)
	name := fs.String("name", "render", "name of the rendering, for messages")
	offportctl := fs.String("offportctl", "", "offportctl binary: load each container's configuration with `config show`")
	_ = fs.Parse(args)
	docs, err := yamlDocs(os.Stdin)
	if err != nil {
		return fmt.Errorf("%s: rendered output is not YAML: %w", *name, err)
	}
	c := &checker{name: *name}
	byKind := map[string][]M{}
	configMaps := map[string]M{}
	for _, doc := range docs {
		kind := str(doc["kind"])
		byKind[kind] = append(byKind[kind], doc)
		if kind == "ConfigMap" {
			configMaps[str(get(doc, "metadata", "name"))] = doc
		}
	}
	c.expect(len(byKind["Secret"]) == 0, "a Secret is rendered: secrets must only be referenced")

	// Every offport.yaml: known keys only, no secrets, a valid listen address.
	configs := map[string]M{}
	for cmName, cm := range configMaps {
		text, ok := get(cm, "data", "offport.yaml").(string)
		if !ok {
			continue
		}
		var cfg M
		if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
			c.expect(false, "ConfigMap %s: offport.yaml is not YAML: %v", cmName, err)
			continue
		}
		configs[cmName] = cfg
		checkConfigKeys(c, "ConfigMap "+cmName, "", cfg)
	}

	// A restricted egress lets the pods reach the brokers and the registry they are configured
	// with: every bootstrap server's port and the registry URL's.
	for _, np := range byKind["NetworkPolicy"] {
		restricted := false
		for _, t := range list(get(np, "spec", "policyTypes")) {
			restricted = restricted || t == "Egress"
		}
		if !restricted {
			continue
		}
		open := map[string]bool{}
		for _, rule := range list(get(np, "spec", "egress")) {
			for _, port := range list(get(rule, "ports")) {
				open[fmt.Sprint(get(port, "port"))] = true
			}
		}
		for cmName, cfg := range configs {
			for _, server := range strings.Split(str(get(cfg, "kafka", "bootstrap_servers")), ",") {
				server = strings.TrimSpace(server)
				if i := strings.LastIndex(server, ":"); i >= 0 {
					port := server[i+1:]
					c.expect(open[port], "NetworkPolicy %s: egress does not open port %s of bootstrap server %s (ConfigMap %s)", str(get(np, "metadata", "name")), port, server, cmName)
				}
			}
			url := str(get(cfg, "registry", "url"))
			port := "80"
			if strings.HasPrefix(url, "https://") {
				port = "443"
			}
			host := strings.SplitN(strings.SplitN(url, "://", 2)[len(strings.SplitN(url, "://", 2))-1], "/", 2)[0]
			if i := strings.LastIndex(host, ":"); i >= 0 {
				port = host[i+1:]
			}
			c.expect(open[port], "NetworkPolicy %s: egress does not open port %s of registry %s (ConfigMap %s)", str(get(np, "metadata", "name")), port, url, cmName)
		}
	}

	type podOwner struct {
		doc  M
		spec M
		kind string
		name string
	}
	var pods []podOwner
	for _, kind := range []string{"Deployment", "Job", "StatefulSet", "DaemonSet"} {
		for _, doc := range byKind[kind] {
			spec, _ := get(doc, "spec", "template", "spec").(M)
			pods = append(pods, podOwner{doc, spec, kind, str(get(doc, "metadata", "name"))})
		}
	}
	hookWeights := map[string]int{} // kind/name -> weight of hook resources
	for _, doc := range docs {
		if w, ok := hookWeight(doc); ok {
			hookWeights[str(doc["kind"])+"/"+str(get(doc, "metadata", "name"))] = w
		}
	}
	deployments := map[string]M{}
	for _, d := range byKind["Deployment"] {
		deployments[str(get(d, "metadata", "name"))] = d
	}

	for _, p := range pods {
		where := p.kind + " " + p.name
		c.expect(get(p.spec, "securityContext", "runAsNonRoot") == true, "%s: pod securityContext.runAsNonRoot is not true", where)
		c.expect(get(p.spec, "securityContext", "seccompProfile", "type") == "RuntimeDefault", "%s: pod seccompProfile is not RuntimeDefault", where)
		c.expect(p.spec["automountServiceAccountToken"] == false, "%s: automountServiceAccountToken is not false", where)
		containers := append(append([]any{}, list(p.spec["initContainers"])...), list(p.spec["containers"])...)
		c.expect(len(containers) > 0, "%s: no containers", where)
		for _, ct := range containers {
			cm := ct.(M)
			cw := where + " container " + str(cm["name"])
			sc, _ := cm["securityContext"].(M)
			c.expect(get(sc, "readOnlyRootFilesystem") == true, "%s: readOnlyRootFilesystem is not true", cw)
			c.expect(get(sc, "allowPrivilegeEscalation") == false, "%s: allowPrivilegeEscalation is not false", cw)
			drop := list(get(sc, "capabilities", "drop"))
			c.expect(len(drop) == 1 && drop[0] == "ALL", "%s: capabilities.drop is not [ALL]", cw)
			c.expect(get(cm, "resources", "limits", "memory") != nil, "%s: no memory limit", cw)
			for _, e := range list(cm["env"]) {
				env := e.(M)
				_, literal := env["value"]
				c.expect(!(literal && secretName.MatchString(str(env["name"]))), "%s: env %s has a literal value; secrets must come from a secretKeyRef", cw, str(env["name"]))
			}
			if p.kind == "Deployment" {
				c.expect(get(cm, "livenessProbe", "httpGet", "path") == "/healthz", "%s: livenessProbe is not GET /healthz", cw)
				c.expect(get(cm, "readinessProbe", "httpGet", "path") == "/readyz", "%s: readinessProbe is not GET /readyz", cw)
				c.expect(get(cm, "startupProbe", "httpGet", "path") == "/healthz", "%s: startupProbe is not GET /healthz", cw)
				ports := list(cm["ports"])
				c.expect(len(ports) == 1 && get(ports[0], "name") == "metrics", "%s: no single port named metrics", cw)
				cmdline := list(cm["command"])
				c.expect(len(cmdline) == 3 && strings.HasPrefix(str(cmdline[0]), "offport-") && cmdline[1] == "--config" && cmdline[2] == "/etc/offport/offport.yaml",
					"%s: command is not [offport-<stage>, --config, /etc/offport/offport.yaml]: %v", cw, cmdline)
			}
		}
		if p.kind == "Deployment" {
			grace, _ := p.spec["terminationGracePeriodSeconds"].(int)
			c.expect(grace >= 20, "%s: terminationGracePeriodSeconds %d leaves the service less than its ~15 s to stop", where, grace)
		}
		// Volumes of a hook pod must exist before it: hooks themselves, created earlier.
		podWeight, isHook := hookWeight(p.doc)
		for _, v := range list(p.spec["volumes"]) {
			vol := v.(M)
			cmName := str(get(vol, "configMap", "name"))
			// The address map's volume is the user's own (normalize.sourcesFile.volume).
			if cmName == "" || str(vol["name"]) == "sources" {
				continue
			}
			_, exists := configMaps[cmName]
			c.expect(exists, "%s: volume %s names ConfigMap %s, which is not rendered", where, str(vol["name"]), cmName)
			if isHook {
				w, hook := hookWeights["ConfigMap/"+cmName]
				c.expect(hook && w < podWeight, "%s is a hook but ConfigMap %s is not a hook created before it (it would not exist on a first install)", where, cmName)
			}
		}
		if isHook {
			sa := str(p.spec["serviceAccountName"])
			if _, rendered := hookWeights["ServiceAccount/"+sa]; !rendered {
				for _, doc := range byKind["ServiceAccount"] {
					c.expect(str(get(doc, "metadata", "name")) != sa, "%s is a hook but its ServiceAccount %s is a release resource (it would not exist on a first install)", where, sa)
				}
			}
		}
		if *offportctl != "" {
			if err := loadConfigs(c, p.kind, p.name, p.spec, configMaps, *offportctl); err != nil {
				return err
			}
		}
	}

	// Services, PDBs, autoscalers point at what is rendered.
	for _, svc := range byKind["Service"] {
		n := str(get(svc, "metadata", "name"))
		matched := false
		for _, d := range deployments {
			matched = matched || labelsMatch(get(svc, "spec", "selector"), get(d, "spec", "template", "metadata", "labels"))
		}
		c.expect(matched, "Service %s selects no Deployment's pods", n)
		c.expect(get(svc, "spec", "publishNotReadyAddresses") == true, "Service %s: publishNotReadyAddresses is not true (metrics would not be scraped while restoring)", n)
	}
	for _, pdb := range byKind["PodDisruptionBudget"] {
		n := str(get(pdb, "metadata", "name"))
		matched := false
		for _, d := range deployments {
			matched = matched || labelsMatch(get(pdb, "spec", "selector", "matchLabels"), get(d, "spec", "template", "metadata", "labels"))
		}
		c.expect(matched, "PodDisruptionBudget %s selects no Deployment's pods", n)
	}
	scaled := map[string]string{}
	for _, kind := range []string{"HorizontalPodAutoscaler", "ScaledObject"} {
		for _, doc := range byKind[kind] {
			n := str(get(doc, "metadata", "name"))
			target := str(get(doc, "spec", "scaleTargetRef", "name"))
			_, ok := deployments[target]
			c.expect(ok, "%s %s scales %s, which is not a rendered Deployment", kind, n, target)
			if other, dup := scaled[target]; dup {
				c.expect(false, "Deployment %s is scaled by both %s and %s", target, other, kind+" "+n)
			}
			scaled[target] = kind + " " + n
		}
	}
	for n, d := range deployments {
		_, autoscaled := scaled[n]
		_, hasReplicas := get(d, "spec").(M)["replicas"]
		c.expect(autoscaled != hasReplicas, "Deployment %s: spec.replicas must be set exactly when no autoscaler owns it (autoscaled: %v)", n, autoscaled)
	}
	for _, so := range byKind["ScaledObject"] {
		stage := str(get(so, "metadata", "labels", "app.kubernetes.io/component"))
		for _, t := range list(get(so, "spec", "triggers")) {
			group := str(get(t, "metadata", "consumerGroup"))
			c.expect(get(t, "type") == "kafka" && strings.HasSuffix(group, stage) && group != stage,
				"ScaledObject for %s: trigger is not kafka on the consumer group <prefix>%s (got %q)", stage, stage, group)
		}
	}

	fmt.Printf("  %s: %d documents (%s), %d checks", *name, len(docs), summarizeKinds(byKind), c.checks)
	if len(c.failures) > 0 {
		fmt.Printf(", %d FAILED:\n", len(c.failures))
		for _, f := range c.failures {
			fmt.Printf("    - %s\n", f)
		}
		return fmt.Errorf("%s: %d failed checks", *name, len(c.failures))
	}
	fmt.Println(", all passed")
	return nil
}

func summarizeKinds(byKind map[string][]M) string {
	var parts []string
	for k, v := range byKind {
		parts = append(parts, fmt.Sprintf("%d %s", len(v), k))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// loadConfigs runs `offportctl config show` for every offport container of a pod, with the
// rendered offport.yaml, its environment (secret references and the pod name given dummy values)
// and the mounted Secret files present (as empty files), the paths moved under a temporary
// directory. The services load their configuration exactly this way, so a key or a combination
// they reject fails here.
func loadConfigs(c *checker, kind, name string, spec M, configMaps map[string]M, offportctl string) error {
	dir, err := os.MkdirTemp("", "helmtool-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	volumes := map[string]M{}
	for _, v := range list(spec["volumes"]) {
		volumes[str(get(v, "name"))] = v.(M)
	}
	containers := append(append([]any{}, list(spec["initContainers"])...), list(spec["containers"])...)
	for _, ct := range containers {
		cm := ct.(M)
		where := fmt.Sprintf("%s %s container %s", kind, name, str(cm["name"]))
		configPath := ""
		for _, m := range list(cm["volumeMounts"]) {
			mount := m.(M)
			vol := volumes[str(mount["name"])]
			target := filepath.Join(dir, str(mount["mountPath"]))
			if cmName := str(get(vol, "configMap", "name")); cmName != "" {
				data, _ := get(configMaps[cmName], "data").(M)
				if sub := str(mount["subPath"]); sub != "" {
					text := strings.ReplaceAll(str(data[sub]), "/etc/offport/", dir+"/etc/offport/")
					if err := writeFile(target, text); err != nil {
						return err
					}
					if strings.HasSuffix(target, "/etc/offport/offport.yaml") {
						configPath = target
					}
				} else {
					for key, text := range data {
						if err := writeFile(filepath.Join(target, key), str(text)); err != nil {
							return err
						}
					}
				}
			}
			for _, item := range list(get(vol, "secret", "items")) {
				if err := writeFile(filepath.Join(target, str(get(item, "path"))), ""); err != nil {
					return err
				}
			}
		}
		if configPath == "" {
			continue
		}
		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		for _, e := range list(cm["env"]) {
			em := e.(M)
			value := str(em["value"])
			if ref := get(em, "valueFrom", "secretKeyRef", "key"); ref != nil {
				value = "from-secret-" + str(ref)
				if secretName.MatchString(str(em["name"])) {
					value = "secret-value-" + str(ref)
				}
			} else if get(em, "valueFrom", "fieldRef") != nil {
				value = "offport-stage-7d9f8b6c5d-x2x4q"
			}
			env = append(env, str(em["name"])+"="+value)
		}
		cmd := exec.Command(offportctl, "--config", configPath, "config", "show")
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		err := cmd.Run()
		c.expect(err == nil, "%s: `offportctl config show` rejects the rendered configuration and environment: %v\n%s", where, err, indent(out.String()))
		if err == nil {
			shown := out.String()
			c.expect(!strings.Contains(shown, "secret-value-"), "%s: `config show` printed a secret:\n%s", where, indent(shown))
		}
	}
	return nil
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n      ")
}

func writeFile(path, text string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

// ---------------------------------------------------------------------------------------------
// README values table

// schemaLeaves lists the dotted paths of the chart's values that the README must document. Inline
// objects that take no other keys are descended into, and so are the definitions named in
// descendDefs (a stage, the global autoscaling/keda/PDB blocks); any other property (free-form
// Kubernetes objects, resources, probes, a stage's override blocks) is one row. Sibling stages,
// all the same definition, are documented once as stages.<name>.
var descendDefs = map[string]bool{"stage": true, "autoscaling": true, "keda": true, "podDisruptionBudget": true}

func schemaLeaves(schema M, defs M, prefix string, out *[]string) {
	props, _ := schema["properties"].(M)
	same := ""
	for _, v := range props {
		r, _ := v.(M)["$ref"].(string)
		if r == "" || (same != "" && r != same) || !descendDefs[strings.TrimPrefix(r, "#/definitions/")] {
			same = ""
			break
		}
		same = r
	}
	if same != "" && len(props) > 1 {
		def := defs[strings.TrimPrefix(same, "#/definitions/")].(M)
		schemaLeaves(def, defs, strings.TrimPrefix(prefix+".<name>", "."), out)
		return
	}
	for k, v := range props {
		if k == "global" && prefix == "" {
			continue
		}
		child := v.(M)
		path := strings.TrimPrefix(prefix+"."+k, ".")
		if r, ok := child["$ref"].(string); ok {
			name := strings.TrimPrefix(r, "#/definitions/")
			if descendDefs[name] {
				schemaLeaves(defs[name].(M), defs, path, out)
			} else {
				*out = append(*out, path)
			}
			continue
		}
		if _, hasProps := child["properties"]; hasProps && child["additionalProperties"] == false {
			schemaLeaves(child, defs, path, out)
			continue
		}
		*out = append(*out, path)
	}
}

var readmeRow = regexp.MustCompile("^\\| `([^`]+)` \\| (.*?) \\| (.*) \\|$")

func checkReadme(args []string) error {
	fs := flag.NewFlagSet("check-readme", flag.ExitOnError)
	valuesPath := fs.String("values", "", "values.yaml")
	schemaPath := fs.String("schema", "", "values.schema.json")
	readmePath := fs.String("readme", "", "README.md")
	_ = fs.Parse(args)
	var schema M
	data, err := os.ReadFile(*schemaPath)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &schema); err != nil {
		return err
	}
	defs, _ := schema["definitions"].(M)
	var leaves []string
	schemaLeaves(schema, defs, "", &leaves)
	var values M
	data, err = os.ReadFile(*valuesPath)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, &values); err != nil {
		return err
	}
	readme, err := os.ReadFile(*readmePath)
	if err != nil {
		return err
	}
	documented := map[string]string{} // path -> default cell, from the "## Values" section
	inValues := false
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "## ") {
			inValues = strings.HasPrefix(line, "## Values")
		}
		if m := readmeRow.FindStringSubmatch(strings.TrimSpace(line)); inValues && m != nil {
			if _, dup := documented[m[1]]; dup {
				return fmt.Errorf("README documents %s twice", m[1])
			}
			documented[m[1]] = m[2]
		}
	}
	if len(documented) == 0 {
		return fmt.Errorf("%s: no values table under a \"## Values\" heading", *readmePath)
	}
	var problems []string
	known := map[string]bool{}
	for _, leaf := range leaves {
		known[leaf] = true
		cell, ok := documented[leaf]
		if !ok {
			problems = append(problems, fmt.Sprintf("value %s is not in the README's table", leaf))
			continue
		}
		// The default column shows values.yaml's value as compact JSON (stages.<name>: the
		// normalize-proxy entry's; a stage's own default may differ and is said in the meaning).
		def, present := lookup(values, strings.ReplaceAll(leaf, "<name>", "normalize-proxy"))
		want := "(unset)"
		if present {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(def)
			want = "`" + strings.TrimSpace(buf.String()) + "`"
		}
		if cell != want {
			problems = append(problems, fmt.Sprintf("value %s: README default %s, values.yaml has %s", leaf, cell, want))
		}
	}
	for path := range documented {
		if !known[path] {
			problems = append(problems, fmt.Sprintf("README documents %s, which is not a value of the chart", path))
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		return errors.New("README.md and values disagree:\n  - " + strings.Join(problems, "\n  - "))
	}
	fmt.Printf("  README documents all %d values with their defaults\n", len(leaves))
	return nil
}

func lookup(values M, path string) (any, bool) {
	var node any = values
	for _, p := range strings.Split(path, ".") {
		m, ok := node.(M)
		if !ok {
			return nil, false
		}
		node, ok = m[p]
		if !ok {
			return nil, false
		}
	}
	return node, true
}
