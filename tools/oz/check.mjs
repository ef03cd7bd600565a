// Reads {"values": [[a, b], ...], "proofs": [{root, leafEncoding, leaf, proof}, ...],
// "dump"?: haca's tree dump} on stdin. Builds the tree with OpenZeppelin's StandardMerkleTree
// from the same values, and checks each proof with StandardMerkleTree.verify; a dump is loaded
// with StandardMerkleTree.load and compared with OpenZeppelin's own dump. Prints {"root": ...,
// "verified": [true, ...], "dumpRoot"?: ..., "dumpSame"?: bool}.
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { values, proofs, dump } = JSON.parse(input);
const tree = StandardMerkleTree.of(values, ["bytes32", "bytes32"]);
const verified = proofs.map((p) => {
  try {
    return StandardMerkleTree.verify(p.root, p.leafEncoding, p.leaf, p.proof);
  } catch (e) {
    return false;
  }
});
const out = { root: tree.root, verified };
if (dump) {
  out.dumpRoot = StandardMerkleTree.load(dump).root;
  const mine = tree.dump();
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  out.dumpSame =
    mine.format === dump.format &&
    same(mine.leafEncoding, dump.leafEncoding) &&
    same(mine.tree, dump.tree) &&
    mine.values.length === dump.values.length &&
    mine.values.every((v, i) => v.treeIndex === dump.values[i].treeIndex && same(v.value, dump.values[i].value));
}
console.log(JSON.stringify(out));
