// Compiles contracts/src/*.sol with npm solc (pinned in package.json) into contracts/build/:
// NAME.json = {contract, compiler, optimizer, abi, bytecode} per contract. The build output is
// committed, so cargo builds need no compiler; rerun after changing a source:
//   npm ci --prefix contracts && node contracts/build.mjs
// and commit the changed build/ files (haca-evm's tests check the committed ABI's selectors).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const solc = require('solc');
const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, 'src');
// Output directory: contracts/build, or the first argument (haca-evm's test compiles into a
// temporary one and compares it with the committed build).
const out = process.argv[2] ? path.resolve(process.argv[2]) : path.join(here, 'build');

const sources = {};
for (const f of fs.readdirSync(src).filter((f) => f.endsWith('.sol')).sort()) {
  sources[f] = { content: fs.readFileSync(path.join(src, f), 'utf8') };
}
const optimizer = { enabled: true, runs: 200 };
const input = {
  language: 'Solidity',
  sources,
  settings: {
    optimizer,
    evmVersion: 'cancun',
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
};
function findImports(p) {
  const candidates = [path.join(here, 'node_modules', p), path.join(src, p)];
  for (const c of candidates) {
    if (fs.existsSync(c)) return { contents: fs.readFileSync(c, 'utf8') };
  }
  return { error: `not found: ${p}` };
}
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
let failed = false;
for (const e of output.errors ?? []) {
  console.error(e.formattedMessage);
  if (e.severity === 'error') failed = true;
}
if (failed) process.exit(1);
fs.mkdirSync(out, { recursive: true });
for (const file of Object.keys(sources)) {
  for (const [name, c] of Object.entries(output.contracts[file])) {
    const artifact = {
      contract: name,
      source: `src/${file}`,
      compiler: `solc ${solc.version()}`,
      evmVersion: input.settings.evmVersion,
      optimizer,
      abi: c.abi,
      bytecode: '0x' + c.evm.bytecode.object,
    };
    fs.writeFileSync(path.join(out, `${name}.json`), JSON.stringify(artifact, null, 1) + '\n');
    console.log(`${name}: ${c.evm.bytecode.object.length / 2} bytes -> ${path.join(out, name)}.json`);
  }
}
