import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

export interface Pki {
  readonly dir: string
  readonly ca: string
  /** One certificate per name, valid for `localhost` and 127.0.0.1, for server and client use. */
  readonly cert: (name: string) => { readonly cert: string; readonly key: string }
  readonly remove: () => void
}

const openssl = (cwd: string, ...args: Array<string>) => execFileSync("openssl", args, { cwd, stdio: "pipe" })

/** A throwaway certificate authority (EC keys, one day) in a temp dir, made with the openssl CLI. */
export const makePki = (label = "ca"): Pki => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), `resonance-pki-${label}-`))
  openssl(dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", `/CN=resonance-test-${label}`)
  Fs.writeFileSync(
    Path.join(dir, "leaf.ext"),
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
  )
  const issued = new Map<string, { cert: string; key: string }>()
  return {
    dir,
    ca: Path.join(dir, "ca.crt"),
    cert: (name) => {
      const known = issued.get(name)
      if (known !== undefined) return known
      openssl(dir, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`)
      openssl(dir, "x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", `${name}.crt`, "-days", "1", "-extfile", "leaf.ext")
      const files = { cert: Path.join(dir, `${name}.crt`), key: Path.join(dir, `${name}.key`) }
      issued.set(name, files)
      return files
    },
    remove: () => Fs.rmSync(dir, { recursive: true, force: true })
  }
}
